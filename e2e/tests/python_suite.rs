//! The Kubernetes Python client's own end-to-end suites (`kubernetes/e2e_test` and the asyncio
//! client's `kubernetes/aio/e2e_test` of kubernetes-client/python, vendored unmodified under `e2e/clients/kubernetes-python-e2e` at the
//! release of the client it runs with), against `skiff up`. Its images come from a local
//! registry that the node uses as its mirror of docker.io and k8s.gcr.io, built from this
//! host's busybox, nginx and python (`e2e/scripts/make-suite-images.sh`). Every test must pass
//! or be skipped by the suite itself; the skips and their reasons are printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use e2e::*;

/// The suite's directory: `kubernetes/e2e_test` inside it, and the suite reads its YAML files
/// relative to it.
fn suite_root() -> PathBuf {
    workspace().join("e2e/clients/kubernetes-python-e2e")
}

/// Puts the vendored suite into the client's package (`kubernetes.e2e_test`, as its imports
/// name it) of the suite's own virtualenv; returns the directory that holds the package.
fn install_suite(python: &Path) -> Result<PathBuf> {
    let out = run(Command::new(python).args([
        "-c",
        "import kubernetes, os; print(os.path.dirname(kubernetes.__file__))",
    ]))
    .context("the suite's Python has no kubernetes client")?;
    let package = PathBuf::from(out.trim());
    for suite in ["e2e_test", "aio/e2e_test"] {
        let target = package.join(suite);
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        run(Command::new("cp")
            .arg("-r")
            .arg(suite_root().join("kubernetes").join(suite))
            .arg(&target))?;
    }
    Ok(package
        .parent()
        .context("the kubernetes package has no parent directory")?
        .to_path_buf())
}

/// What unittest's `-v` report says: how many tests ran, the skips with their reasons (a
/// test with a docstring has its name on the line before), and the failed tests' headers.
struct Report {
    ran: usize,
    skips: Vec<String>,
    failures: Vec<String>,
    ok: bool,
}

fn report(log: &str) -> Report {
    let lines: Vec<&str> = log.lines().collect();
    let mut skips = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some((test, why)) = l.split_once(" ... skipped ") {
            let name = if test.starts_with("test") || i == 0 {
                test
            } else {
                lines[i - 1]
            };
            skips.push(format!("{name}: {why}"));
        }
    }
    Report {
        ran: lines
            .iter()
            .find_map(|l| {
                l.strip_prefix("Ran ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0),
        skips,
        failures: lines
            .iter()
            .filter(|l| l.starts_with("FAIL: ") || l.starts_with("ERROR: "))
            .map(|l| l.to_string())
            .collect(),
        ok: lines.iter().any(|l| *l == "OK" || l.starts_with("OK (")),
    }
}

#[test]
fn the_python_clients_own_e2e_suite_passes() -> Result<()> {
    let python = PathBuf::from(std::env::var("SKIFF_PYSUITE_PYTHON").context(
        "SKIFF_PYSUITE_PYTHON names the suite's Python (a venv with the kubernetes client of the \
         vendored suite's release; e2e/run-tests.sh makes it)",
    )?);
    with_cluster(|c, work, reg| {
        run(Command::new("sh")
            .arg(workspace().join("e2e/scripts/make-suite-images.sh"))
            .arg(work.join("suite-images"))
            .arg(reg))?;
        let registries = work.join("registries.yaml");
        std::fs::write(
            &registries,
            format!(
                "mirrors:\n  docker.io:\n    endpoint: [\"http://{reg}\"]\n  k8s.gcr.io:\n    endpoint: [\"http://{reg}\"]\n"
            ),
        )?;
        c.extra_args = vec![
            "--registries-config".into(),
            registries.display().to_string(),
        ];
        c.start()?;
        let site = install_suite(&python)?;
        // The synchronous suite reads its YAML files relative to the suite's root; the asyncio
        // one writes a file into the directory it runs in.
        let suites = [
            ("kubernetes/e2e_test", suite_root(), 43),
            ("kubernetes/aio/e2e_test", work.to_path_buf(), 2),
        ];
        for (suite, cwd, tests) in suites {
            let log = work.join(format!("{}.log", suite.replace('/', "-")));
            let status = Command::new("timeout")
                .arg("1500")
                .arg(&python)
                .args(["-m", "unittest", "discover", "-v", "-s"])
                .arg(site.join(suite))
                .arg("-t")
                .arg(&site)
                .current_dir(cwd)
                .env("KUBECONFIG", c.kubeconfig())
                .stdout(std::fs::File::create(&log)?)
                .stderr(std::fs::File::create(log.with_extension("err"))?)
                .status()?;
            let out = std::fs::read_to_string(log.with_extension("err"))?;
            let r = report(&out);
            for skip in &r.skips {
                println!("skipped by the suite: {skip}");
            }
            // Fewer tests than the vendored release has means some did not load.
            if !status.success() || !r.ok || !r.failures.is_empty() || r.ran < tests {
                let tail: Vec<&str> = out.lines().rev().take(150).collect();
                bail!(
                    "the Python client's {suite} ran {} tests, failures: {:?}\n{}",
                    r.ran,
                    r.failures,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            println!(
                "the Python client's {suite}: {} tests, {} skipped by the suite",
                r.ran,
                r.skips.len()
            );
        }
        Ok(())
    })
}

#[test]
fn reads_unittests_verbose_report() {
    let log = "test_a (m.C.test_a) ... ok\ntest_b (m.C.test_b)\nDoes b. ... skipped 'no metrics server'\n\
               test_c (m.C.test_c) ... skipped 'v5 not negotiated'\n\
               ======\nFAIL: test_d (m.C.test_d)\n----\nRan 4 tests in 1.0s\n\nFAILED (failures=1, skipped=2)\n";
    let r = report(log);
    assert_eq!(r.ran, 4);
    assert_eq!(
        r.skips,
        [
            "test_b (m.C.test_b): 'no metrics server'",
            "test_c (m.C.test_c): 'v5 not negotiated'"
        ]
    );
    assert_eq!(r.failures, ["FAIL: test_d (m.C.test_d)"]);
    assert!(!r.ok);
    assert!(report("Ran 2 tests in 0.1s\n\nOK (skipped=1)\n").ok);
}
