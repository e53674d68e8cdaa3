//! Variables already in the environment beat `.env`, for the services and `ctl` (dotenvy)
//! and for every script (`scripts/dotenv.sh`); a published SECRET_KEY stops them starting.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A folder holding only a `.env` with `lines`.
fn folder_with_dotenv(lines: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ctl-env-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), lines).unwrap();
    dir
}

/// `ctl config` in `dir` with nothing in the environment but `vars`.
fn ctl_config(dir: &Path, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctl"));
    cmd.arg("config").current_dir(dir).env_clear();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn setting(output: &Output, name: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} not printed in {stdout}"))
        .to_owned()
}

const DOTENV: &str = "PUBLIC_URL=http://from-dotenv.example\n\
                      NATS_PREFIX=fromdotenv\n\
                      SECRET_KEY=dotenv-secret-9f8e7d6c5b4a39281706f5e4d3c2b1a0\n";

#[test]
fn the_environment_beats_dotenv_in_the_binaries() {
    let dir = folder_with_dotenv(DOTENV);
    let out = ctl_config(&dir, &[("PUBLIC_URL", "http://from-env.example")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(setting(&out, "PUBLIC_URL"), "http://from-env.example");
    assert_eq!(
        setting(&out, "NATS_PREFIX"),
        "fromdotenv",
        ".env fills the rest"
    );
    assert_eq!(
        setting(&out, "SECRET_KEY"),
        "<set, 46 bytes>",
        "and never prints it"
    );
    // Set but empty is still set.
    let out = ctl_config(&dir, &[("NATS_PREFIX", "")]);
    assert_eq!(setting(&out, "NATS_PREFIX"), "");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_environment_beats_dotenv_in_the_scripts() {
    let dir = folder_with_dotenv(
        "PUBLIC_URL=http://from-dotenv.example\nNATS_PREFIX=\"from dotenv\"\nexport EXTRA=extra\n",
    );
    let script = repo().join("scripts/dotenv.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; . '{}'; echo \"$PUBLIC_URL|$NATS_PREFIX|$EXTRA\"; env | grep -c '^PUBLIC_URL='",
            script.display()
        ))
        .current_dir(&dir)
        // Nothing from the caller's environment (a developer's exported .env) may leak in.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PUBLIC_URL", "http://from-env.example")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "http://from-env.example|from dotenv|extra\n1\n"
    );
    std::fs::remove_dir_all(dir).ok();

    // Every script that reads .env does it through dotenv.sh, never by sourcing it directly.
    for entry in std::fs::read_dir(repo().join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") && !path.ends_with("dotenv.sh") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains(". ./.env") && !text.contains("source .env"),
                "{} sources .env over the environment",
                path.display()
            );
        }
    }
}

#[test]
fn a_published_or_short_secret_refuses_to_start_outside_development() {
    let dir = folder_with_dotenv("");
    for secret in ["change-me-change-me-change-me-change-me", "short", ""] {
        let out = ctl_config(&dir, &[("SECRET_KEY", secret)]);
        assert!(!out.status.success(), "{secret:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("SECRET_KEY"), "{stderr}");
    }
    let out = ctl_config(&dir, &[("APP_ENV", "development")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(setting(&out, "APP_ENV"), "development");
    std::fs::remove_dir_all(dir).ok();
}
