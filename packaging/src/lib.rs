//! Archive format v1.
