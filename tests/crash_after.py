"""A training callback that saves a checkpoint after epoch ``n`` and then stops the run
with :class:`Crash`, the way a killed process would: for the resume tests."""


class Crash(Exception):
    pass


def stop_after(n):
    def cb(run, metrics):
        if metrics.epoch + 1 == n:
            run.save_checkpoint()
            raise Crash()

    return cb
