//! Config loading: every example loads, Telegraf's default config loads, bad input is a
//! clear error naming file and line.
