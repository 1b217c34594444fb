"""Differential tests: the same QMP conversation against a real QEMU and the emulator, answer by answer.

Modules: ``wire`` (raw QMP over a unix socket: malformed input goes out as is, replies come back as sent),
``conversation`` (the steps and the runner), ``compare`` (the comparison rules), ``differences`` (the allow-list
of documented differences, mirrored in docs/differences.md), ``targets`` (the two sides, started from one VM
description) and ``conversations`` (what is said, grouped by the VM each needs).  The tests are
``tests/test_differential_*.py``; each runs against this machine's QEMU 7.2 and, when its tree is built
(``balloonlab guest qemu``), Debian 13's QEMU 10.0.

Adding a conversation: write it in ``conversations.py`` from the steps in ``conversation.py`` (a ``Send`` is
compared exactly unless it names another rule), add it to its group's list, and run the test module.  A mismatch
is either an emulator bug or, if the emulator differs on purpose, a new entry in ``differences.py`` *and* a heading
in docs/differences.md, named by the step's ``allow`` (test_differential_compare.py checks the two agree).
"""
