"""Links: each owns one hardware or network handle and runs under the supervisor."""
