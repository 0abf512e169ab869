//! The README's "A pipeline in code" shows `src/bin/scale_out_minimal.rs`
//! whole: this test keeps the two the same, so the README never shows code
//! that does not compile.

#[test]
fn the_readme_shows_the_minimal_program_verbatim() {
    let readme = include_str!("../../README.md");
    let program = include_str!("../src/bin/scale_out_minimal.rs");
    let block = format!("```rust\n{program}```\n");
    assert!(
        readme.contains(&block),
        "README.md (\"A pipeline in code\") must show examples/src/bin/scale_out_minimal.rs \
         verbatim in a ```rust block: copy the file there"
    );
}
