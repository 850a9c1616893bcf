//! Protocol conformance tests; see tests/.
