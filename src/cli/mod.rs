//! The command line: `skiff up` (the embedded single-node cluster), and the client commands
//! `apply`, `get`, `delete` and `logs`, which talk to any Kubernetes API through kube-rs.

mod agent;
mod client;
mod cluster;
mod controller;
mod down;
mod image;
mod lock;
mod node;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// skiff: a Kubernetes-compatible mini orchestrator in one binary.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
struct Cli {
    /// Kubeconfig for the client commands (default: $KUBECONFIG, then /var/lib/skiff/kubeconfig).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole single-node cluster in this process: control plane, node agent, runtime.
    Up(up::UpArgs),
    /// Run one member of a replicated control plane, or manage the members (`member ...`).
    Controller(controller::ControllerArgs),
    /// Run a node against a control plane (`--kubeconfig`): agent and skiff's runtime, or any CRI runtime.
    Agent(agent::AgentArgs),
    /// Multi-node test clusters on this machine: `create`, `list`, `stop`, `start`, `delete`,
    /// `load-image` (each node a network namespace running skiff).
    Cluster(cluster::ClusterArgs),
    /// Stop what a data dir's `skiff up` or `skiff agent` left running (the process, its
    /// containers, mounts and network); `--purge` also deletes the data dir.
    Down(down::DownArgs),
    /// The node's images: `pull` (with progress), `ls`, `rm`, `import` (OCI or docker archives).
    Image(image::ImageArgs),
    /// Create or update the objects in YAML files (multi-document; a directory; `-` for stdin).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Show objects: `skiff get pods`, `skiff get nodes`, `skiff get pod web -o yaml`.
    Get {
        /// Resource type: pods, nodes, namespaces, or any type the server serves (po, no, ns...).
        resource: String,
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long = "all-namespaces")]
        all_namespaces: bool,
        /// wide, yaml or json.
        #[arg(short = 'o', long)]
        output: Option<String>,
        /// Keep watching for changes.
        #[arg(short = 'w', long)]
        watch: bool,
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Delete objects by file (`-f`) or by type and name.
    Delete {
        resource: Option<String>,
        names: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Seconds the pod gets to stop (0 with --force deletes at once).
        #[arg(long)]
        grace_period: Option<i64>,
        /// Do not wait for graceful termination.
        #[arg(long)]
        force: bool,
        /// Wait until the objects are gone, as kubectl does (`--wait=false` returns at once).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        wait: bool,
        /// How long to wait for the objects to be gone (0s: as long as it takes).
        #[arg(long, default_value = "0s", value_parser = duration)]
        timeout: std::time::Duration,
    },
    /// Print a container's log.
    Logs {
        pod: String,
        #[arg(short = 'c', long)]
        container: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Stream the log as it grows.
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        tail: Option<i64>,
        #[arg(short = 'p', long)]
        previous: bool,
    },
    /// Print skiff's version and the commit it was built from.
    Version,
    /// Print a shell completion script (`source <(skiff completion bash)`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What `skiff version` prints: the release, the commit, and the Kubernetes API it serves.
fn version_line() -> String {
    let commit = env!("SKIFF_GIT_COMMIT");
    format!(
        "skiff v{} (commit {}; serves the Kubernetes v1.35 API)",
        env!("CARGO_PKG_VERSION"),
        if commit.is_empty() { "unknown" } else { commit }
    )
}

/// The completion script for `shell`.
fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory as _;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "skiff", &mut out);
    out
}

/// A Go duration as kube-apiserver's flags take it: `1h`, `1h30m`, `90s`, `500ms`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {s:?}: use a number and unit, like 1h, 30m or 90s");
    let mut total = std::time::Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += std::time::Duration::from_secs_f64(n * secs);
        rest = tail;
    }
    Ok(total)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = ::controller::api::discovery::GIT_COMMIT.set(env!("SKIFF_GIT_COMMIT"));
    // Commands that need neither logging nor a runtime.
    match cli.command {
        Command::Version => {
            println!("{}", version_line());
            return ExitCode::SUCCESS;
        }
        Command::Completion { shell } => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(&completion(shell));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // `up` logs what it does; client commands report errors themselves (kube's client would
    // also log each failed connection).
    let default_filter = match cli.command {
        // nlink logs each error the kernel answers, which its callers handle.
        Command::Up(_) | Command::Agent(_) => "info,nlink=off",
        Command::Controller(ref a) if controller::is_server(a) => "info,nlink=off",
        // nlink logs each error the kernel answers, which its callers handle.
        _ => "warn,kube_client=off,nlink=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One TLS provider for the whole process (kube's and the registry client's rustls).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Controller(ref a) = cli.command
        && controller::is_server(a)
    {
        // A control-plane member runs raft on a thread of its own (`store::RaftThread`), which
        // is busy whenever the API is: leave it a core. On two cores one API worker also spares
        // every request the hand-offs between idle workers that cost more than the request.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cores.saturating_sub(1).max(1));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let kc = cli.kubeconfig;
        match cli.command {
            Command::Version | Command::Completion { .. } => Ok(()),
            Command::Up(args) => up::run(args).await,
            Command::Controller(args) => controller::run(args).await,
            Command::Image(args) => image::run(args).await,
            Command::Agent(args) => agent::run(kc, args).await,
            Command::Down(args) => down::run(args).await,
            Command::Cluster(args) => cluster::run(args).await,
            Command::Apply { files, namespace } => {
                client::apply(kc, &files, namespace.as_deref()).await
            }
            Command::Get {
                resource,
                name,
                namespace,
                all_namespaces,
                output,
                watch,
                selector,
            } => {
                client::get(
                    kc,
                    client::GetArgs {
                        resource,
                        name,
                        namespace,
                        all_namespaces,
                        output,
                        watch,
                        selector,
                    },
                )
                .await
            }
            Command::Delete {
                resource,
                names,
                files,
                namespace,
                grace_period,
                force,
                wait,
                timeout,
            } => {
                let grace = if force {
                    Some(grace_period.unwrap_or(0))
                } else {
                    grace_period
                };
                let wait = wait.then_some(timeout);
                client::delete(
                    kc,
                    resource,
                    names,
                    &files,
                    namespace.as_deref(),
                    grace,
                    wait,
                )
                .await
            }
            Command::Logs {
                pod,
                container,
                namespace,
                follow,
                tail,
                previous,
            } => {
                client::logs(
                    kc,
                    &pod,
                    container.as_deref(),
                    namespace.as_deref(),
                    follow,
                    tail,
                    previous,
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<client::Reported>().is_some() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: libraries often put their source's
/// text in their own message as well as returning it as the source, which `{:#}` would repeat.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command, duration, error_line};
    use clap::Parser as _;
    use std::time::Duration;

    /// `skiff delete`'s wait and timeout, as kubectl spells them.
    fn delete_wait(args: &[&str]) -> Result<(bool, Duration), String> {
        let cli = Cli::try_parse_from(["skiff", "delete"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Delete { wait, timeout, .. } => Ok((wait, timeout)),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    #[test]
    fn version_and_completions() {
        let line = super::version_line();
        assert!(
            line.starts_with(&format!("skiff v{} (commit ", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(super::completion(shell)).unwrap();
            for word in ["apply", "delete", "logs", "--kubeconfig"] {
                assert!(script.contains(word), "{shell:?} completion lacks {word}");
            }
        }
        assert!(Cli::try_parse_from(["skiff", "completion", "powershell"]).is_ok());
        assert!(Cli::try_parse_from(["skiff", "completion", "tcsh"]).is_err());
    }

    #[test]
    fn delete_waits_unless_told_not_to() {
        assert_eq!(delete_wait(&["pod", "x"]), Ok((true, Duration::ZERO)));
        assert_eq!(
            delete_wait(&["pod", "x", "--wait=false"]),
            Ok((false, Duration::ZERO))
        );
        assert_eq!(
            delete_wait(&["pod", "x", "--wait"]),
            Ok((true, Duration::ZERO))
        );
        assert_eq!(
            delete_wait(&["-f", "p.yaml", "--timeout", "30s"]),
            Ok((true, Duration::from_secs(30)))
        );
        let err = delete_wait(&["pod", "x", "--timeout", "soon"]).unwrap_err();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
        assert!(delete_wait(&["pod", "x", "--wait=maybe"]).is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "1", "1d", "h", "1h-"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "failed to read kubeconfig: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(Wrapped(io)).context("cannot read kubeconfig /x");
        assert_eq!(
            error_line(&e),
            "cannot read kubeconfig /x: failed to read kubeconfig: entity not found"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&plain), "outer: inner");
    }
}
