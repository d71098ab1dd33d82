//! Integration tests through the real server.
