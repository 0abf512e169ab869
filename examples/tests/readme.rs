//! Every Rust block in the README is a file the build compiles, shown whole:
//! the program of "A pipeline in code" is `src/bin/scale_out_minimal.rs`, and
//! "Scaling by itself" is `src/scaling.rs`. This test keeps each block the
//! same as its file, and fails on a Rust block that is neither, so the README
//! never shows code that does not compile.

const README: &str = include_str!("../../README.md");

/// The compiled files the README may show, by path.
const SHOWN: [(&str, &str); 2] = [
    (
        "examples/src/bin/scale_out_minimal.rs",
        include_str!("../src/bin/scale_out_minimal.rs"),
    ),
    ("examples/src/scaling.rs", include_str!("../src/scaling.rs")),
];

/// The README's ```rust blocks (whatever their attributes), with the text inside.
fn rust_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```rust") => current = Some(String::new()),
            Some(block) if fence.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn the_readme_shows_each_compiled_file_verbatim() {
    for (path, file) in SHOWN {
        let block = format!("```rust\n{file}```\n");
        assert!(
            README.contains(&block),
            "README.md must show {path} verbatim in a ```rust block: copy the file there"
        );
    }
}

#[test]
fn every_rust_block_of_the_readme_is_a_compiled_file() {
    let blocks = rust_blocks(README);
    assert!(
        blocks.len() >= SHOWN.len(),
        "found {} Rust blocks",
        blocks.len()
    );
    for block in blocks {
        assert!(
            SHOWN.iter().any(|(_, file)| *file == block),
            "this Rust block of README.md is not a compiled file; make it one \
             (and list it in SHOWN) or show it as text:\n{block}"
        );
    }
}
