"""Agent: the bridge between EA connections and Core."""
