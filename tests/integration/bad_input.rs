//! Bad input to `eddy invoke`: one line saying what is wrong and what was expected, exit code
//! 1, no panic and no backtrace.

use eddy_tests::{Run, eddy, wasm, wat_file};
use tempfile::TempDir;

fn assert_one_line_error(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "nothing on stdout: {run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line on stderr: {:?}",
        run.stderr
    );
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{:?} should contain {needle:?}",
            lines[0]
        );
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(
        !run.stderr.to_lowercase().contains("backtrace"),
        "{}",
        run.stderr
    );
}

fn invoke_file(dir: &TempDir, path: &std::path::Path) -> Run {
    eddy(&["invoke", path.to_str().unwrap()], dir.path())
}

#[test]
fn a_file_that_is_not_wasm() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "these are not the bytes you are looking for").unwrap();
    assert_one_line_error(
        &invoke_file(&dir, &path),
        &["notes.wasm", "not a WebAssembly file"],
    );
}

#[test]
fn a_core_module_instead_of_a_component() {
    let dir = TempDir::new().unwrap();
    let path = wat_file(dir.path(), "core", "(module (func (export \"handle\")))");
    assert_one_line_error(
        &invoke_file(&dir, &path),
        &["core WebAssembly module, not a component", "wasm32-wasip2"],
    );
}

#[test]
fn a_component_without_the_handler_export() {
    let dir = TempDir::new().unwrap();
    let path = wat_file(dir.path(), "empty", "(component)");
    assert_one_line_error(
        &invoke_file(&dir, &path),
        &[
            "does not implement world eddy:function/function@0.1.2",
            "eddy:function/handler@0.1.2",
        ],
    );
}

#[test]
fn a_handler_with_the_wrong_signature() {
    let dir = TempDir::new().unwrap();
    let path = wat_file(
        dir.path(),
        "wrong-signature",
        r#"(component
             (core module $m (func (export "h") (result i32) i32.const 0))
             (core instance $i (instantiate $m))
             (func $h (result u32) (canon lift (core func $i "h")))
             (instance $inst (export "handle" (func $h)))
             (export "eddy:function/handler@0.1.0" (instance $inst)))"#,
    );
    assert_one_line_error(
        &invoke_file(&dir, &path),
        &["does not implement world", "handle"],
    );
}

#[test]
fn an_import_eddy_does_not_provide_is_named() {
    let dir = TempDir::new().unwrap();
    let path = wat_file(
        dir.path(),
        "foreign-import",
        r#"(component (import "acme:db/query@1.0.0" (instance (export "run" (func)))))"#,
    );
    assert_one_line_error(
        &invoke_file(&dir, &path),
        &["does not implement world", "acme:db/query@1.0.0"],
    );
}

#[test]
fn data_that_is_not_json_while_the_content_type_is_json() {
    let dir = TempDir::new().unwrap();
    let path = wasm("echo");
    let run = eddy(
        &["invoke", path.to_str().unwrap(), "--data", "{not json"],
        dir.path(),
    );
    assert_one_line_error(&run, &["--data is not valid JSON", "application/json"]);
}

#[test]
fn data_that_is_not_json_is_fine_with_another_content_type() {
    let dir = TempDir::new().unwrap();
    let path = wasm("echo");
    let run = eddy(
        &[
            "invoke",
            path.to_str().unwrap(),
            "--data",
            "plain words",
            "--content-type",
            "text/plain",
        ],
        dir.path(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(r#""data":"plain words""#),
        "{}",
        run.stdout
    );
}

#[test]
fn a_missing_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nowhere.wasm");
    assert_one_line_error(&invoke_file(&dir, &path), &["nowhere.wasm", "No such file"]);
}

#[test]
fn an_unusable_limit_is_a_usage_error_naming_the_flag() {
    let dir = TempDir::new().unwrap();
    let path = wasm("echo");
    let run = eddy(
        &["invoke", path.to_str().unwrap(), "--memory", "lots"],
        dir.path(),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--memory"), "{}", run.stderr);
    assert!(run.stderr.contains("expected a size"), "{}", run.stderr);
}
