"""Where a sweep's runs execute. An executor is a function

    executor(fn, jobs, *, workers, ...) -> iterator of (job index, result, error)

that calls ``fn(*job)`` for every job somewhere, and yields each outcome as it finishes (``error``
is the exception a job raised, else None; one failing job does not stop the others). The sweep
passes :func:`forgetless.sweep.run_point`, which writes its run folder itself, so every executor
leaves the same files.

- ``local`` (:func:`forgetless.sweep.run_local`): spawned processes on this machine, the default.
- ``ray`` (:func:`forgetless.executors.ray_executor.run_ray`): one Ray task per job, on a local Ray
  or a cluster; needs the optional extra ``pip install 'forgetless[ray]'``. Ray is imported only
  when this executor runs: importing forgetless never imports ray.
"""
