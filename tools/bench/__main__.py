"""`python -m tools.bench` (`make benchmark`): the whole benchmark, as tools/bench/run.py describes it."""

from tools.bench.run import command_line

command_line()
