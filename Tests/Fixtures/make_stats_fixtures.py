"""Reference values for StatsTests (scipy), written to stats_expected.json.

Run: python3 Tests/Fixtures/make_stats_fixtures.py   (numpy + scipy; CI needs neither)
- clopper_pearson: exact binomial intervals, scipy.stats.binomtest(...).proportion_ci(method="exact")
- mcnemar: exact two-sided p of the discordant pairs, scipy.stats.binomtest(min(b, c), b + c, 0.5)
- bootstrap_accuracy: the exact distribution of accuracy under a stratified bootstrap of a fixed
  sample (class 0: 190 of 200 right, class 1: 184 of 200 right) is (Bin(200, .95) + Bin(200, .92)) / 400;
  its 2.5 % and 97.5 % quantiles, which a many-resample bootstrap must approach
- auc: Mann-Whitney U / (n1 n0) with ties, scipy.stats.mannwhitneyu
"""
import json
import os

import numpy as np
from scipy import stats

out = {"clopper_pearson": [], "mcnemar": []}
for k, n in [(388, 400), (0, 20), (20, 20), (57, 60), (1, 3), (371, 400)]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    out["clopper_pearson"].append({"k": k, "n": n, "lower": ci.low, "upper": ci.high})
for b, c in [(3, 11), (0, 5), (10, 10), (1, 0), (20, 45), (2, 13)]:
    out["mcnemar"].append({"b": b, "c": c, "p": stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0})

p0 = stats.binom.pmf(np.arange(201), 200, 190 / 200)
p1 = stats.binom.pmf(np.arange(201), 200, 184 / 200)
dist = np.convolve(p0, p1)  # P(total right = t), t = 0...400
cdf = np.cumsum(dist)
quantile = lambda q: int(np.searchsorted(cdf, q)) / 400
out["bootstrap_accuracy"] = {"n0": 200, "right0": 190, "n1": 200, "right1": 184,
                             "lower": quantile(0.025), "upper": quantile(0.975)}

labels = [0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1]
scores = [0.1, 0.4, 0.35, 0.8, 0.8, 0.9, 0.4, 0.2, 0.65, 0.3, 0.5, 0.5]
pos = [s for s, y in zip(scores, labels) if y == 1]
neg = [s for s, y in zip(scores, labels) if y == 0]
u = stats.mannwhitneyu(pos, neg, alternative="two-sided").statistic
out["auc"] = {"labels": labels, "scores": scores, "auc": u / (len(pos) * len(neg))}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats_expected.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
