//! The SQLite schema and its forward migrations (`PRAGMA user_version`).
