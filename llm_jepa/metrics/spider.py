"""Spider: execution accuracy (llm_jepa.sql_exec), in any column order and in the gold's, and
normalised exact match."""
from __future__ import annotations

from .. import sql_exec
from .base import Metric, RowScore, ScoreContext, gold_answer, user_content


class SpiderMetric(Metric):
    name = "spider"
    primary = "execution"

    def score(self, generation: str, row: dict, ctx: ScoreContext, aux: dict | None = None) -> RowScore:
        gold = gold_answer(row)
        metrics = {"execution": None, "execution_strict": None,
                   "exact_match": sql_exec.exact_match(gold, generation)}
        if ctx.spider_path is None:
            return self._row_score(metrics, "no --spider_path")
        db_id = sql_exec.parse_db_id(user_content(row))
        if db_id is None:
            return self._row_score(metrics, "no db_id in the user message")
        results = sql_exec.execution_results(ctx.spider_path, db_id, gold, generation,
                                             timeout_s=ctx.sql_timeout)
        if results.execution.status != "skipped":   # skipped (missing db, broken gold) stays None
            metrics["execution"] = results.execution.status == "correct"
            metrics["execution_strict"] = results.strict.status == "correct"
        return self._row_score(metrics, results.execution.reason)
