//! The `skiff` binary: parses the command line, sets up logging, and hands over to the CLI.
//! Everything it runs lives in the library crates (`controller`, `node-agent`, `runtime`).

mod cli;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A container monitor is a tiny single-threaded process: no tokio, no CLI parsing.
    if args.get(1).is_some_and(|a| a == "__monitor") {
        let code = runtime::monitor_main(args[2..].to_vec());
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // The zygote that forks monitors, single-threaded as well.
    if args.get(1).is_some_and(|a| a == runtime::ZYGOTE_ARG) {
        let code = runtime::zygote_main();
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // The PID 1 of a pod's shared PID namespace (`shareProcessNamespace`): unshares and forks
    // before any thread exists.
    if args.get(1).is_some_and(|a| a == runtime::PAUSE_ARG) {
        let code = runtime::pause_main();
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // The exec helper: one command in a running container, also single-threaded.
    if args.get(1).is_some_and(|a| a == runtime::EXEC_ARG) {
        let code = runtime::exec_main(args[2..].to_vec());
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    cli::main()
}
