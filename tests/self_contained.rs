//! The repository is all a user has: no test, script or build step may read
//! a path outside it. This test reads every text file in the tree and fails
//! on any relative path that climbs above the repository's root, such as a
//! reference file expected beside the clone. CI also runs the suite from a
//! fresh clone with nothing beside it (`.ci/run`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Directories that hold what a build or a run made, not the project.
const NOT_THE_PROJECT: [&str; 3] = [".git", "target", "node_modules"];

/// How many levels a relative path climbs above the directory it starts
/// from: `../x` climbs 1, `a/../../x` climbs 1, `x/y` climbs 0.
fn climb(path: &str) -> usize {
    let mut depth: isize = 0;
    let mut lowest: isize = 0;
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                depth -= 1;
                lowest = lowest.min(depth);
            }
            _ => depth += 1,
        }
    }
    lowest.unsigned_abs()
}

/// The paths in `text` that climb more than `allowed` levels.
fn escaping_paths(text: &str, allowed: usize) -> Vec<String> {
    let separators = |c: char| c.is_whitespace() || "\"'`()[]{}<>,;=|&".contains(c);
    text.split(separators)
        .filter(|token| token.contains('/') && token.split('/').any(|s| s == ".."))
        .filter(|token| climb(token) > allowed)
        .map(str::to_owned)
        .collect()
}

/// Every file of the project, skipping build output and virtual environments.
fn project_files(directory: &Path, files: &mut Vec<PathBuf>) {
    if directory.join("pyvenv.cfg").exists() {
        return;
    }
    for entry in std::fs::read_dir(directory).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_dir() {
            if !NOT_THE_PROJECT.iter().any(|skip| name == *skip) {
                project_files(&path, files);
            }
        } else {
            files.push(path);
        }
    }
}

/// How deep `path` lies below `root`: 0 for the root itself.
fn depth(root: &Path, path: &Path) -> usize {
    path.strip_prefix(root).unwrap().components().count()
}

/// The directory a file's relative paths start from, as far as this check
/// goes: a Rust file's paths are taken from its crate's manifest directory
/// (where `CARGO_MANIFEST_DIR` and `sqlx::migrate!` start), the stricter of
/// the two bases; any other file's from its own directory.
fn base(root: &Path, file: &Path) -> PathBuf {
    let directory = file.parent().unwrap();
    if file.extension().is_some_and(|extension| extension == "rs") {
        let manifest = directory
            .ancestors()
            .take_while(|ancestor| ancestor.starts_with(root))
            .find(|ancestor| ancestor.join("Cargo.toml").exists());
        if let Some(manifest) = manifest {
            return manifest.to_path_buf();
        }
    }
    directory.to_path_buf()
}

#[test]
fn no_file_names_a_path_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    project_files(root, &mut files);
    assert!(
        files.iter().any(|file| file.ends_with("deploy/test.sh")),
        "the walk reaches the scripts"
    );

    // This file's own examples of escaping paths are not read by anything.
    let this_file = root.join(file!());
    let mut found = Vec::new();
    for file in files.iter().filter(|file| **file != this_file) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue; // not text
        };
        let allowed = depth(root, &base(root, file));
        for path in escaping_paths(&text, allowed) {
            found.push(format!(
                "{}: {path}",
                file.strip_prefix(root).unwrap().display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "paths outside the repository:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_path_beside_the_repository_is_noticed() {
    // The reference file once read from beside the clone, from a crate two
    // levels below the root.
    let line = r#".join("../../../shared/reference/salesforce.md")"#;
    assert_eq!(
        escaping_paths(line, 2),
        ["../../../shared/reference/salesforce.md"]
    );
    assert!(escaping_paths(r#"migrate!("../../migrations")"#, 2).is_empty());
    assert_eq!(
        escaping_paths(r#"concat!(env!("CARGO_MANIFEST_DIR"), "/../../x")"#, 1).len(),
        1
    );
    assert!(escaping_paths("a range 0..10, a slice [..], a pause...", 0).is_empty());
    assert_eq!(climb("a/../../x"), 1);
    assert_eq!(climb("x/y"), 0);
}
