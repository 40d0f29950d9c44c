"""The built-in changes. Each module is a plugin registered exactly like a third-party one;
each owns the change type of the same name, from detection to transform. Every module here is
loaded (``rvlm.core.plugins.host.DEFAULT_PLUGINS``), so a new change type is a new file.

| module          | change type     | document work                                  |
|-----------------|-----------------|------------------------------------------------|
| add_field       | add_field       | none (a new vector field is blocked)           |
| remove_field    | remove_field    | none (documents keep their values)             |
| rename_field    | rename_field    | none (the value moves as a move_path change)   |
| update_field    | update_field    | none (a type change is blocked)                |
| move_path       | move_path       | value moved to the new JSON path / hash field  |
|                 |                 | (a rename's too)                               |
| vector_index    | vector_index    | none (algorithm, metric, parameters)           |
| quantize        | quantize        | every vector converted to the new datatype     |
| rename_index    | rename_index    | none                                           |
| change_prefix   | change_prefix   | every key moved to the new prefix              |
| update_index    | update_index    | none (storage type and key separator blocked)  |
"""
