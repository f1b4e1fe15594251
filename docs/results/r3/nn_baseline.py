# The 1-NN row of docs/results/r3's table: each test slice takes the label of its nearest training slice
# (plain NCC of 32x32 thumbnails, as the leakage check), on the fixed split, on the five
# patient-level folds (cv/fold-K/{train,test}.csv, pooled out-of-fold), and on MedSeg (every slice COVID:
# sensitivity, the reference set being each fold's training slices, figures averaged over the folds).
# Intervals: 95 %, bootstrap over the inferred patient groups (groups/groups.csv; stratified by class,
# 2000 draws) for the CT set, Clopper-Pearson over slices for MedSeg (no patient ids there).
# Usage (numpy, Pillow): python nn_baseline.py [CT data folder] [MedSeg folder]
import csv, math, sys, os, numpy as np
from PIL import Image
here = os.path.dirname(os.path.abspath(__file__))
D = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, '../../../../shared/data/sars-cov-2-ct-224')
M = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, '../../../../shared/data/medseg-covid-lesions')

def thumb(path):
    im = Image.open(path).convert('L')
    if im.size != (224, 224): im = im.resize((224, 224), Image.BILINEAR)
    t = np.asarray(im, dtype=np.float64).reshape(32, 7, 32, 7).mean(axis=(1, 3)).ravel()
    t -= t.mean(); return t / (np.linalg.norm(t) + 1e-12)

def rows(path): return list(csv.DictReader(open(path)))
group = {r['filename']: r['group'] for r in rows(os.path.join(here, 'groups/groups.csv'))}
cache = {}
def X(files, root):
    return np.array([cache.setdefault(os.path.join(root, f), thumb(os.path.join(root, f))) for f in files])

def nn(train, test, root_tr, root_te):
    a, b = X([r['filename'] for r in train], root_tr), X([r['filename'] for r in test], root_te)
    ytr = np.array([int(float(r['label'])) for r in train])
    return ytr[np.argmax(b @ a.T, axis=1)]

def group_boot(y, correct, groups, draws=2000, seed=0):
    rng = np.random.default_rng(seed); out = []
    by = {}
    for i, g in enumerate(groups): by.setdefault((y[i], g), []).append(i)
    per = {c: [v for k, v in by.items() if k[0] == c] for c in set(y)}
    for _ in range(draws):
        idx = []
        for c, gl in per.items():
            for j in rng.integers(0, len(gl), len(gl)): idx += gl[j]
        out.append(correct[idx].mean())
    return np.percentile(out, [2.5, 97.5])

def patient_level(y, pred, groups):
    # a patient's majority label against its majority prediction (1-NN gives no probability to average)
    ps = {}
    for yi, pi, g in zip(y, pred, groups): ps.setdefault(g, []).append((yi, pi))
    ys = np.array([round(np.mean([a for a, _ in v]) + 1e-9) for v in ps.values()])
    pp = np.array([1 if np.mean([b for _, b in v]) > 0.5 else 0 for v in ps.values()])
    return (ys == pp).mean(), len(ps)

def clopper_pearson(k, n, a=0.05):
    def cdf(p, k): return sum(math.comb(n, i) * p**i * (1 - p)**(n - i) for i in range(k + 1))
    def solve(f, lo=0.0, hi=1.0):
        for _ in range(60):
            mid = (lo + hi) / 2
            if f(mid): hi = mid
            else: lo = mid
        return (lo + hi) / 2
    lower = 0.0 if k == 0 else solve(lambda p: 1 - cdf(p, k - 1) >= a / 2)
    upper = 1.0 if k == n else solve(lambda p: cdf(p, k) <= a / 2)
    return lower, upper

def report(name, test, pred):
    y = np.array([int(float(r['label'])) for r in test]); c = (pred == y).astype(float)
    g = [group.get(r['filename'], 'slice:' + r['filename']) for r in test]
    lo, hi = group_boot(y, c, g); pa, npat = patient_level(y, pred, g)
    sens = c[y == 1].mean(); spec = c[y == 0].mean()
    print(f'{name}: accuracy {100*c.mean():.2f} % ({100*lo:.2f}-{100*hi:.2f}), sensitivity {100*sens:.2f} %, '
          f'specificity {100*spec:.2f} %, {len(y)} slices; patient level {100*pa:.2f} % of {npat} groups')

fixed_tr, fixed_te = rows(os.path.join(D, 'train.csv')), rows(os.path.join(D, 'test.csv'))
report('fixed split', fixed_te, nn(fixed_tr, fixed_te, D, D))
oof_te, oof_pred, medseg = [], [], rows(os.path.join(M, 'slices.csv'))
med_hits = []
for k in range(5):
    f = os.path.join(here, f'cv/fold-{k}')
    tr, te = rows(f + '/train.csv'), rows(f + '/test.csv')
    p = nn(tr, te, D, D); oof_te += te; oof_pred.append(p)
    med_hits.append(int(nn(tr, medseg, D, M).sum()))
report('patient-level CV (pooled out-of-fold, 5 folds)', oof_te, np.concatenate(oof_pred))
n = len(medseg); k = int(round(np.mean(med_hits)))
lo, hi = clopper_pearson(k, n)
print(f'MedSeg: sensitivity {100*np.mean(med_hits)/n:.2f} % (mean over the 5 folds\' references; '
      f'per fold {", ".join(f"{100*h/n:.1f}" for h in med_hits)}), Clopper-Pearson {100*lo:.2f}-{100*hi:.2f} % of {n} slices')
