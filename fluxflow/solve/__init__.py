"""Gain-solve kernels (pure numpy): solution intervals, G/T solves, in-memory apply, amplitude
outlier flagging and reference-antenna ranking (spec §3.5, §3.6, §5, §9)."""

from fluxflow.solve.apply import apply_gains
from fluxflow.solve.gaincal import corr_hands, reference_phases, solve_gains, solve_gains_multi_spw
from fluxflow.solve.outliers import (FlagCommand, apply_flag_commands, casa_ymd,
                                     flag_amplitude_outliers, mad)
from fluxflow.solve.refant import rank_refants, refant_scores
from fluxflow.solve.solint import parse_solint, solution_intervals

__all__ = [
    "FlagCommand", "apply_flag_commands", "apply_gains", "casa_ymd", "corr_hands",
    "flag_amplitude_outliers", "mad", "parse_solint", "rank_refants", "reference_phases",
    "refant_scores", "solution_intervals", "solve_gains", "solve_gains_multi_spw",
]
