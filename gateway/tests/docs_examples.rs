//! The backend example in docs/backends.md is the crate's compiled doctest, not a copy that
//! can drift: each of its lines is a line of the doctest in gateway/src/lib.rs.

const GUIDE: &str = include_str!("../../docs/backends.md");
const CRATE_DOCS: &str = include_str!("../src/lib.rs");

/// The lines of the first fenced block after `## A backend in Rust, in twenty lines`.
fn guide_example() -> Vec<&'static str> {
    let section = GUIDE
        .split_once("## A backend in Rust, in twenty lines")
        .expect("the section")
        .1;
    let block = section.split_once("```rust\n").expect("a rust block").1;
    let block = block.split_once("```").expect("the block's end").0;
    block.lines().collect()
}

#[test]
fn the_guides_backend_is_the_doctest() {
    let doctest: Vec<&str> = CRATE_DOCS
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect();
    let example = guide_example();
    assert!(example.len() >= 10, "the example is gone: {example:?}");
    let start = doctest
        .iter()
        .position(|line| *line == example[0])
        .unwrap_or_else(|| panic!("{:?} is not in the doctest", example[0]));
    for (offset, line) in example.iter().enumerate() {
        assert_eq!(
            doctest.get(start + offset),
            Some(line),
            "docs/backends.md line {offset} of the example differs from gateway/src/lib.rs"
        );
    }
}
