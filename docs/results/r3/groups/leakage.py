# The leakage check behind PatientGroups.defaultJump: 1-NN (plain NCC of 32x32 thumbnails) on 20 random
# group-disjoint 20 % test splits, for groups re-cut at several jumps from groups.csv's ncc_previous, and on
# random per-slice splits. Usage: python leakage.py [groups.csv] [data folder]   (numpy, Pillow)
import csv, sys, numpy as np
from PIL import Image
D=(sys.argv[2] if len(sys.argv) > 2 else '../../../../../shared/data/sars-cov-2-ct-224') + '/'
rows=list(csv.DictReader(open(sys.argv[1] if len(sys.argv) > 1 else 'groups.csv')))
X=[]
for r in rows:
    im=np.asarray(Image.open(D+r['filename']).convert('L'),dtype=np.float64)
    t=im.reshape(32,7,32,7).mean(axis=(1,3)).ravel(); t-=t.mean(); t/=np.linalg.norm(t)+1e-12; X.append(t)
X=np.array(X); y=np.array([int(r['label']) for r in rows])
S=X@X.T
# walk order per class = order of rows sorted by number? recompute groups from ncc_previous needs walk order: use the inferred group ids at cut and re-cut
import re
def num(f): m=re.findall(r'\d+',f.split('/')[-1]); return int(m[-1]) if m else 10**9
def groups(k):
    g=np.empty(len(rows),dtype=object)
    for lab in set(y):
        idx=[i for i in range(len(rows)) if y[i]==lab]; idx.sort(key=lambda i:num(rows[i]['filename']))
        d=np.array([1-float(rows[i]['ncc_previous']) for i in idx[1:]]); thr=k*np.median(d)
        gid=0; g[idx[0]]=f'{lab}-0'
        for a,i in enumerate(idx[1:]):
            if d[a]>thr: gid+=1
            g[i]=f'{lab}-{gid}'
    return g
rng=np.random.default_rng(0)
for k in [2,2.5,3,3.5,4,5,6]:
    g=groups(k); ug=np.unique(g); accs=[]
    for rep in range(20):
        test=set(); 
        for lab in (0,1):
            gl=[x for x in ug if x.startswith(f'{lab}-')]; rng.shuffle(gl); n=0; tot=(y==lab).sum()
            for x in gl:
                if n>=0.2*tot: break
                test.add(x); n+=(g==x).sum()
        te=np.array([x in test for x in g]); tr=~te
        nn=np.argmax(np.where(tr[None,:],S[te],-9),axis=1); accs.append((y[nn] == y[te]).mean())  # nn indexes all images (non-train columns masked)
    print(k,len(ug),round(np.mean(accs)*100,1),round(np.std(accs)*100,1))
# slice-random
accs=[]
for rep in range(20):
    te=rng.random(len(rows))<0.2; tr=~te; nn=np.argmax(np.where(tr[None,:],S[te],-9),axis=1); accs.append((y[nn]==y[te]).mean())
print('random',round(np.mean(accs)*100,1))
