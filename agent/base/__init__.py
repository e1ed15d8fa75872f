"""The bottom layer: value types (batch columns, snapshot, labels) and array helpers every part may import."""
