"""Scripts the DDP tests launch as subprocesses (``tests.helpers.run_script``), one module per launch.

Each module runs its scenario under ``if __name__ == "__main__"`` (Lightning's ``ddp`` strategy starts
the other ranks by running the same file with the same arguments) and writes one
``result_rank{r}.json`` per rank with :func:`tests.ddp_scripts._common.dump`.
"""
