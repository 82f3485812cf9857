"""What the tests give to the processes they start (see :mod:`tests.support.slow`)."""
