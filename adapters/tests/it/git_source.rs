//! The Git source against real repositories made with `git` in temp folders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mycopod_adapters::git::{GitError, GitSource};

/// Admits every blob.
fn all(_path: &str, _size: u64) -> bool {
    true
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn write(dir: &Path, path: &str, text: &str) {
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

/// A work repository on branch `main` with one commit.
fn make_repo(dir: &Path) -> String {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    write(dir, "guests/web.yaml", "kind: Guest\n");
    write(dir, "plant/fm.yml", "kind: ModbusDevice\n");
    write(dir, "README.md", "# not a declaration\n");
    write(dir, ".github/workflows/ci.yaml", "on: push\n");
    write(dir, "guests/.draft.yaml", "kind: Guest\n");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
    git(dir, &["rev-parse", "HEAD"])
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("test finished in time")
}

#[tokio::test]
async fn fetch_should_resolve_a_branch_and_read_only_visible_yaml_files() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let head = make_repo(work.path());
    let source = GitSource::new(work.path().to_string_lossy(), cache.path());

    let commit = within(source.fetch("main")).await.unwrap();
    assert_eq!(commit.as_str(), head);

    let files = within(source.read_declarations(&commit, "", all))
        .await
        .unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["guests/web.yaml", "plant/fm.yml"]);
    assert_eq!(files[0].text.as_deref(), Some("kind: Guest\n"));

    let plant_only = within(source.read_declarations(&commit, "plant/", all))
        .await
        .unwrap();
    assert_eq!(plant_only.len(), 1);
    assert_eq!(plant_only[0].path, "plant/fm.yml");
}

#[tokio::test]
async fn fetch_should_pick_up_new_commits_incrementally_and_keep_old_ones_readable() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let first = make_repo(work.path());
    let url = format!("file://{}", work.path().display());
    let source = GitSource::new(url, cache.path());
    let first_commit = within(source.fetch("main")).await.unwrap();
    assert_eq!(first_commit.as_str(), first);

    write(
        work.path(),
        "guests/web.yaml",
        "kind: Guest\nmetadata: {}\n",
    );
    git(work.path(), &["commit", "--quiet", "-am", "second"]);
    let second = git(work.path(), &["rev-parse", "HEAD"]);

    let second_commit = within(source.fetch("main")).await.unwrap();
    assert_eq!(second_commit.as_str(), second);
    let now = within(source.read_declarations(&second_commit, "guests", all))
        .await
        .unwrap();
    assert_eq!(now[0].text.as_deref(), Some("kind: Guest\nmetadata: {}\n"));
    // The commit that was planned before stays readable: plans are bound to commits.
    let before = within(source.read_declarations(&first_commit, "guests", all))
        .await
        .unwrap();
    assert_eq!(before[0].text.as_deref(), Some("kind: Guest\n"));
}

#[tokio::test]
async fn fetch_should_resolve_tags_and_full_commit_ids_and_refuse_unknown_refs() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let head = make_repo(work.path());
    git(work.path(), &["tag", "-a", "v1", "-m", "release one"]);
    let source = GitSource::new(work.path().to_string_lossy(), cache.path());

    assert_eq!(within(source.fetch("v1")).await.unwrap().as_str(), head);
    assert_eq!(within(source.fetch(&head)).await.unwrap().as_str(), head);

    for bad in ["nope", "--upload-pack=touch", "main..v1", &head[..8]] {
        let err = within(source.fetch(bad)).await.unwrap_err();
        assert!(
            matches!(err, GitError::RefNotFound { .. }),
            "{bad}: unexpected {err}"
        );
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn fetch_from_a_missing_remote_should_fail_as_transient_and_name_the_remote() {
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new("/nonexistent/mycopod/repo", cache.path());
    let err = within(source.fetch("main")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/mycopod/repo"),
        "{err}"
    );
}

#[tokio::test]
async fn errors_should_never_show_url_credentials() {
    let cache = tempfile::tempdir().unwrap();
    // Port 9 on loopback: nothing listens, so the fetch fails quickly without leaving the host.
    let source = GitSource::new("http://bob:hunter2@127.0.0.1:9/plant.git", cache.path())
        .with_timeout(Duration::from_secs(20));
    let err = within(source.fetch("main")).await.unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:9/plant.git"), "{text}");
}

#[tokio::test]
async fn a_hanging_git_should_be_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("slow-git");
    std::fs::write(&fake, "#!/bin/sh\nsleep 30\n").unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();

    let source = GitSource::new("/srv/whatever", dir.path().join("cache"))
        .with_git_program(&fake)
        .with_timeout(Duration::from_millis(300));
    let err = within(source.fetch("main")).await.unwrap_err();
    assert!(matches!(err, GitError::Timeout { op: "init", .. }), "{err}");
}

#[tokio::test]
async fn non_utf8_declaration_files_should_be_reported_by_path() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    make_repo(work.path());
    std::fs::write(work.path().join("bad.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "--quiet", "-m", "binary"]);
    let source = GitSource::new(work.path().to_string_lossy(), cache.path());
    let commit = within(source.fetch("main")).await.unwrap();
    let err = within(source.read_declarations(&commit, "", all))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitError::NotUtf8 { path, .. } if path == "bad.yaml"),
        "{err}"
    );
}

/// A commit written to exhaust memory: blobs the caller refuses by size (here past a file
/// limit, or past a total) are listed with their sizes and never read.
#[tokio::test]
async fn blobs_past_the_limits_should_be_listed_by_size_and_not_read() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    make_repo(work.path());
    write(work.path(), "a-big.yaml", &"x: 1\n".repeat(400));
    write(work.path(), "b-small.yaml", "kind: Guest\n");
    write(work.path(), "c-small.yaml", "kind: Guest\n");
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "--quiet", "-m", "big"]);
    let source = GitSource::new(work.path().to_string_lossy(), cache.path());
    let commit = within(source.fetch("main")).await.unwrap();
    // In path order: a-big (2,000 bytes) is past the file limit; b-small and c-small (12 bytes
    // each) fit; the two after them would take the total past 30 bytes.
    let mut total = 0;
    let mut asked = Vec::new();
    let admit = |path: &str, size: u64| {
        asked.push(path.to_owned());
        let ok = size <= 1_000 && total + size <= 30;
        if ok {
            total += size;
        }
        ok
    };
    let files = within(source.read_declarations(&commit, "", admit))
        .await
        .unwrap();
    let seen: Vec<(&str, u64, bool)> = files
        .iter()
        .map(|f| (f.path.as_str(), f.size, f.text.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            ("a-big.yaml", 2_000, false),
            ("b-small.yaml", 12, true),
            ("c-small.yaml", 12, true),
            ("guests/web.yaml", 12, false),
            ("plant/fm.yml", 19, false),
        ]
    );
    assert_eq!(
        asked,
        [
            "a-big.yaml",
            "b-small.yaml",
            "c-small.yaml",
            "guests/web.yaml",
            "plant/fm.yml"
        ],
        "asked once per blob, in path order, before reading"
    );
}
