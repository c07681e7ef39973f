"""Scripts that one-process tests launch as subprocesses, one module per launch (not DDP: see ``tests.ddp_scripts``).

Each module runs its scenario under ``if __name__ == "__main__"`` with its arguments on the command line
(:func:`tests.helpers.script_command` builds that line, :func:`tests.helpers.script_env` its environment)
and writes its files in the working directory. Tests run them this way because the scenario needs a
process of its own: one killed with SIGKILL, one sent SIGINT, one writing to a terminal.
"""
