"""Epsilon from Google's dp_accounting RDP accountant over a fixed grid, as CSV on stdout.

Run by scripts/dp-accountant-reference.sh inside a virtualenv holding dp-accounting==0.6.0.
Every row is its own `dp_accounting.rdp.RdpAccountant()` (default orders) composing one event
`steps` times, then `get_epsilon_and_optimal_order(delta)`:

- kind=poisson: `PoissonSampledDpEvent(q, GaussianDpEvent(z))`, add-or-remove-one neighbours
  (the accountant's default relation);
- kind=wor: `SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z))` under
  `NeighboringRelation.REPLACE_ONE`, with z passed as given (no halving for the 2C sensitivity
  of replace-one: the caller decides what sigma means).

Numbers are written with repr(), so a reader gets the exact float64 back.
"""

import csv
import itertools
import sys

from absl import logging
import dp_accounting
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rdp

SAMPLING_RATES = [0.001, 0.01, 0.05, 0.1, 0.5, 1.0]
NOISE_MULTIPLIERS = [0.5, 0.8, 1.0, 2.0, 5.0]
STEPS = [1, 20, 100, 1000, 10000]
DELTAS = [1e-5, 1e-6]
# (population N, sample size m): m = N is sampling everything (q = 1).
WOR_SAMPLES = [(1000, 10), (1000, 100), (100, 50), (20, 20)]
# Edges, each for both deltas: nothing sampled (epsilon 0), no noise (infinite), and an RDP
# curve under the KL threshold delta^2 (epsilon 0 through the KL bound). dp_accounting raises
# ZeroDivisionError for a without-replacement event with z = 0, so that edge is not here.
POISSON_EDGES = [(0.0, 1.0, 100), (0.01, 0.0, 1), (1e-6, 10.0, 1)]
WOR_EDGES = [(1000, 0, 1.0, 100)]

COLUMNS = ["kind", "q", "population", "sample_size", "z", "steps", "delta", "epsilon_dp_accounting", "order"]


def epsilon(accountant, event, steps, delta):
    accountant.compose(event, steps)
    eps, order = accountant.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


def poisson_grid():
    for q, z, steps, delta in itertools.product(SAMPLING_RATES, NOISE_MULTIPLIERS, STEPS, DELTAS):
        yield q, z, steps, delta
    for (q, z, steps), delta in itertools.product(POISSON_EDGES, DELTAS):
        yield q, z, steps, delta


def wor_grid():
    for (n, m), z, steps, delta in itertools.product(WOR_SAMPLES, NOISE_MULTIPLIERS, STEPS, DELTAS):
        yield n, m, z, steps, delta
    for (n, m, z, steps), delta in itertools.product(WOR_EDGES, DELTAS):
        yield n, m, z, steps, delta


def rows():
    for q, z, steps, delta in poisson_grid():
        event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z))
        eps, order = epsilon(rdp.RdpAccountant(), event, steps, delta)
        yield ["poisson", repr(q), "", "", repr(z), steps, repr(delta), repr(eps), repr(order)]
    for n, m, z, steps, delta in wor_grid():
        event = dp_event.SampledWithoutReplacementDpEvent(n, m, dp_event.GaussianDpEvent(z))
        accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        eps, order = epsilon(accountant, event, steps, delta)
        yield ["wor", repr(m / n), n, m, repr(z), steps, repr(delta), repr(eps), repr(order)]


def main():
    # dp_accounting warns for every fractional order whose series does not converge (q = 0.5,
    # z = 5, orders below 2): those orders count as infinite, in Strata too. Quiet here.
    logging.set_verbosity(logging.ERROR)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows():
        writer.writerow(row)


if __name__ == "__main__":
    main()
