//! The stages of the graph, one per file.
