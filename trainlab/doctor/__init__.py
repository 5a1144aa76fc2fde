"""The training doctor: the loop talks to it in four verbs, each returning findings (Diagnosis records).

    doctor = Doctor.new(cfg)
    doctor.at_start(meta=meta)                     # config smells, before the first step (meta: the task's classes)
    doctor.nonfinite(model, x, y, loss_fn, step)   # a NaN/inf loss or grad norm: where it first appeared
    doctor.health(model, x, y, loss_fn, step)      # every doctor.health_every steps: (stats, findings)
    doctor.after_row(step, row)                    # each logged row: the step-0 loss, spikes, plateau, overfitting
    doctor.intervened(kind, step, ...)             # each skipped or rolled-back update
    doctor.at_end(summary, meta)                   # the run's verdict

The parts: smells.py (at start), watch.py (per row), signals.py (the extra passes), fixes.py (overrides to paste),
verdict.py (at the end), report.py (panels, diagnosis.json, `trainlab doctor RUN_DIR`).
"""
from dataclasses import dataclass, field

from trainlab.doctor.findings import Diagnosis
from trainlab.doctor.fixes import clip_fix, lr_down
from trainlab.doctor.smells import first_loss
from trainlab.doctor.watch import WATCH_KEYS, Watch, confirmed, observe, withdraw_symptoms

HEALTH_KEYS = ("vanish", "explode", "dead", "saturated")


@dataclass
class Doctor:
    """The doctor's state for one run: its watch and every finding so far (a checkpoint saves both)."""
    cfg: dict
    on: bool
    watch: Watch
    findings: list = field(default_factory=list)
    meta: dict | None = None  # the task's (num_classes, task): from at_start when the loop passes it, else at_end

    @classmethod
    def new(cls, cfg):
        doc = cfg["doctor"]
        return cls(cfg, doc["name"] != "off", Watch.new(cfg, **{k: doc[k] for k in WATCH_KEYS}))

    def _keep(self, found):
        self.findings += found
        return found

    def at_start(self, per_process_batch=None, meta=None):
        from trainlab.doctor.smells import config_smells

        doc, self.meta = self.cfg["doctor"], meta
        classes = meta.get("num_classes") if meta else None
        return self._keep(config_smells(self.cfg, doc["small_batch"], doc["high_lr"], per_process_batch, classes)
                          if self.on else [])

    def nonfinite(self, model, x, y, loss_fn, step):
        """Where the first NaN/inf of this step appeared (one re-run with hooks); explained once, then counted."""
        from trainlab.doctor.signals import locate_nonfinite

        if not self.on or any(d.kind == "nonfinite" for d in self.findings):
            return []
        return self._keep([locate_nonfinite(model, x, y, loss_fn, self.cfg, step)])

    def health_due(self, step):
        every = self.cfg["doctor"]["health_every"]
        return self.on and every > 0 and step % every == 0

    def health(self, model, x, y, loss_fn, step):
        """One isolated pass with hooks: per-layer statistics, and the findings seen at two passes in a row."""
        from trainlab.doctor.signals import signal_health

        doc = self.cfg["doctor"]
        stats, found = signal_health(model, x, y, loss_fn, self.cfg, step, **{k: doc[k] for k in HEALTH_KEYS})
        return stats, self._keep(confirmed(self.watch, found))

    def after_row(self, step, row):
        if not self.on:
            return []
        first = first_loss(self.cfg, step, row.get("train_loss"), self.meta) if self.meta else None
        return self._keep([first] if first else []) + self._keep(observe(self.watch, step, row, self.findings))

    def intervened(self, kind, step, loss, lr_after=None):
        """A skipped update (kind "skipped") or a rollback to the last good state with the lr cut ("rollback").
        Skips in a row are one finding (its evidence counts them); each rollback is its own."""
        where = "update"
        last = self.findings[-1] if self.findings else None
        if kind == "skipped" and last is not None and last.kind == "skipped" and last.evidence["last"] == step - 1:
            last.evidence.update(last=step, count=last.evidence["count"] + 1)
            last.message = (f"updates {last.step}-{step} skipped ({last.evidence['count']} in a row): their loss or "
                            "grad norm was non-finite; the weights stay as they were")
            return []
        if kind == "skipped":
            message = (f"update {step} skipped: its loss or grad norm was non-finite ({loss}); the weights "
                       "stay as they were and training goes on")
            fixes = [lr_down(self.cfg), *clip_fix(self.cfg)]
        else:
            message = (f"step {step} was non-finite ({loss}): rolled back to the last good evaluation and cut "
                       f"every learning rate 10x (now {lr_after:.3g})")
            fixes = [f"optimizer.lr={lr_after:.3g}", *clip_fix(self.cfg)]
        evidence = {"lr_after": lr_after} if kind == "rollback" else {"first": step, "last": step, "count": 1}
        return self._keep([Diagnosis(kind, "warning", step, where, message, evidence, fixes)])

    def hopeless(self, step, row, meta, after=0.3, at_least=100):
        """Why a search trial cannot win (at chance, or its val loss never better than the untrained model's, after
        `after` of its steps and at least `at_least` steps, where healthy runs of these tasks have long left chance),
        else None."""
        from trainlab.doctor.verdict import NEAR_CHANCE, NO_BETTER, untrained_loss

        steps = self.cfg["trainer"]["max_steps"]
        if step < max(after * steps, at_least):
            return None
        chance, acc, loss = meta.get("chance"), row.get("val_acc"), row.get("val_loss")
        if chance is not None and acc is not None and acc <= chance + NEAR_CHANCE * (1 - chance):
            return f"val_acc {acc:.3f} still at chance ({chance:.3f}) at step {step} of {steps}"
        first = {"val_loss": self.watch.evals[0][1]} if self.watch.evals else {}
        reference = untrained_loss({"first": first}, meta, self.watch)
        best = min([v for _, v, _ in self.watch.evals] + ([loss] if loss is not None else []), default=None)
        if reference is not None and best is not None and best >= NO_BETTER * reference:
            return f"val_loss {loss:.4g} never better than the untrained model's ({reference:.4g}) at step {step} of " \
                   f"{steps}"
        return None

    def at_end(self, summary, meta):
        """The run's verdict (learned, did not learn, unstable, diverged, overfitting) as a finding."""
        from trainlab.doctor.verdict import verdict
        from trainlab.instruments.overfit import verdict_text

        late = []
        if self.on and self.meta is None and self.watch.first is not None and \
                not any(d.kind == "initial_loss" for d in self.findings):  # no meta at start (or a resumed run)
            late = [d for d in [first_loss(self.cfg, self.watch.first[0], self.watch.first[1], meta)] if d]
        self.meta = meta
        n = self.cfg["trainer"]["overfit_batches"]
        if self.on and n:  # Karpathy's first check: a model and loop that work memorize a few batches
            first = self.watch.first[1] if self.watch.first is not None else None
            text = verdict_text(first, summary["final"].get("train_loss"), n)
            late.append(Diagnosis("overfit_batches", "info" if ": memorized" in text else "error", summary["steps"],
                                  "train_loss", text, {"first_loss": first,
                                                       "final_loss": summary["final"].get("train_loss")}))
        late = self._keep(late)  # before the verdict: it reads them
        final = verdict(self.cfg, summary, meta, self.findings, self.watch)
        if final.evidence["verdict"] in ("learned", "overfitting", "unstable"):  # it left chance: a plateau's
            late += self._keep(withdraw_symptoms(self.findings, final.step))  # vanishing/saturated signals were
        return late + self._keep([final])  # its symptoms

    def state_dict(self):
        return {"watch": self.watch.state_dict(), "findings": [d.to_json() for d in self.findings]}

    def load_state_dict(self, state):
        self.watch.load_state_dict(state["watch"])
        self.findings = [Diagnosis.from_json(d) for d in state["findings"]]
