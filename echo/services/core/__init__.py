"""Core: owns every copy decision."""
