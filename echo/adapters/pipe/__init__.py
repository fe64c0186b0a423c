"""Where EA connections come from."""
