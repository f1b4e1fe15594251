# The MedSeg, localisation, lung-energy and occlusion tables of docs/results/r3/README.md, from the run files
# copied under cv/fold-K/METHOD/ and cv-lung-field/fold-K/METHOD/ (summary.json, medseg/summary.json,
# medseg/localization.csv). Plain Python 3. Usage: python tables.py
import csv, glob, json, os
here = os.path.dirname(os.path.abspath(__file__))
def runs(pattern): return sorted(d for d in glob.glob(os.path.join(here, pattern)) if os.path.exists(d + '/summary.json'))
def name(d): return os.path.relpath(d, here)
def pct(v): return f'{100*v:.1f}'

print('## MedSeg (98 COVID slices, another hospital): sensitivity per fold model\n')
print('| run | sensitivity (Clopper-Pearson 95 %) | called COVID |')
print('|---|---|---|')
for d in runs('cv*/fold-*/*'):
    if not os.path.exists(d + '/medseg/summary.json'): continue
    o = json.load(open(d + '/medseg/summary.json'))['oneClass']
    print(f"| {name(d)} | {pct(o['value'])} % ({pct(o['interval']['lower'])}-{pct(o['interval']['upper'])}) | {o['right']} of {o['images']} |")

print('\n## Localisation on MedSeg: every lesion (infection mask), mean over the fold models above\n')
print('Energy inside: share of the map\'s sum inside the lesions; area share: what a uniform map scores; pointing game: the map\'s '
      'maximum inside a lesion. "image": over the whole slice; "lungs": within the slice\'s lung mask only.\n')
print('| run set | method | region | energy inside | area share | ratio | pointing game | pixel AUC | models |')
print('|---|---|---|---|---|---|---|---|---|')
for label, pattern in [('scratch, patient-level folds', 'cv/fold-*/scratch'), ('transfer, patient-level folds', 'cv/fold-*/transfer'),
                       ('scratch --lung-field', 'cv-lung-field/fold-*/scratch')]:
    acc = {}
    for d in runs(pattern):
        p = d + '/medseg/localization.csv'
        if not os.path.exists(p): continue
        for r in csv.DictReader(open(p)):
            if r['lesion'] != 'lesion': continue
            acc.setdefault((r['method'], r['region']), []).append(r)
    for (m, reg), rs in sorted(acc.items(), key=lambda kv: (kv[0][1], -sum(float(r['ratio']) for r in kv[1]))):
        mean = lambda k: sum(float(r[k]) for r in rs) / len(rs)
        print(f"| {label} | {m} | {reg} | {mean('energy_inside'):.3f} | {mean('area_share'):.3f} | {mean('ratio'):.2f} | "
              f"{mean('pointing_game'):.3f} | {mean('pixel_auc'):.3f} | {len(rs)} |")

print('\n## Where the maps lie on the fold\'s own test split (100 slices): lungs and bottom 15 % of rows, mean over fold models\n')
print('| run set | method | inside lungs | lung area | bottom rows | bottom area | models |')
print('|---|---|---|---|---|---|---|')
for label, pattern in [('scratch', 'cv/fold-*/scratch'), ('transfer', 'cv/fold-*/transfer'), ('scratch --lung-field', 'cv-lung-field/fold-*/scratch')]:
    acc = {}
    for d in runs(pattern):
        l = json.load(open(d + '/summary.json')).get('lungs')
        if not l: continue
        for e in l['energy']:
            if e['images'] >= 50: acc.setdefault(e['method'], []).append(e)
    for m, es in sorted(acc.items()):
        mean = lambda k: sum(e[k] for e in es) / len(es)
        print(f"| {label} | {m} | {mean('insideLungs'):.3f} | {mean('lungArea'):.3f} | {mean('bottomRows'):.3f} | {mean('bottomArea'):.3f} | {len(es)} |")

print('\n## Occlusion check: the fold\'s test split as it is, and with everything outside the dilated lung mask set to the darkest grey\n')
print('| run | accuracy | occluded | sensitivity | occluded | specificity | occluded | ROC AUC | occluded |')
print('|---|---|---|---|---|---|---|---|---|')
for d in runs('cv*/fold-*/*'):
    l = json.load(open(d + '/summary.json')).get('lungs')
    if not l: continue
    a, b = l['occlusion']['plain'], l['occlusion']['occluded']
    print(f"| {name(d)} | " + ' | '.join(f"{pct(a[k])} | {pct(b[k])}" for k in ['accuracy', 'sensitivity', 'specificity']) +
          f" | {a['auc']:.3f} | {b['auc']:.3f} |")
