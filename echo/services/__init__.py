"""Services: trio code that drives the pure rules and calls ports. No concrete adapter is imported here."""
