#!/usr/bin/env python3
"""An independent client for `disttrain serve` (issue 29): not a CI test.

pynetdicom sends a DICOM series to the node and runs its own storage SCP as
the node's --forward target; what comes back is read with pydicom and
highdicom and checked:
  - the Comprehensive SR is in the source study, its series-level probability
    equals the node's series.csv mean within 1e-4, and its evidence references
    every SOP instance sent;
  - one Secondary Capture (RGB) per slice, each naming its own source slice,
    in the source study;
  - a calling AE title outside --allow is rejected at association (reason 3),
    C-ECHO answers 0x0000, and SIGTERM makes the node exit 0.

    python tools/pacs_roundtrip.py --disttrain .build/debug/disttrain --run RUN --series DIR

RUN is a run folder trained on DICOM (or give --window); DIR a folder of one
CT series (e.g. from `disttrain synth --format dicom`).
"""
import argparse
import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import highdicom as hd
import pydicom
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage, Verification

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--disttrain", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--series", required=True)
    ap.add_argument("--window", default=None)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    files = sorted(glob.glob(os.path.join(a.series, "*.dcm")))
    sent = [pydicom.dcmread(f) for f in files]
    sent_uids = {d.SOPInstanceUID for d in sent}
    study = sent[0].StudyInstanceUID
    print(f"series: {len(files)} instances of study {study}")

    # The forward target: our own storage SCP.
    received, lock = [], threading.Lock()

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        with lock:
            received.append(ds)
        return 0x0000

    catcher = AE(ae_title="CATCHER")
    catcher.supported_contexts = AllStoragePresentationContexts
    cport = free_port()
    scp = catcher.start_server(("127.0.0.1", cport), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])

    work = tempfile.mkdtemp(prefix="pacs-roundtrip-")
    nport = free_port()
    cmd = [a.disttrain, "serve", "--run", a.run, "--port", str(nport), "--forward", f"CATCHER@127.0.0.1:{cport}",
           "--allow", "PYNET", "--idle", "1", "--out", work + "/serve"]
    if a.window:
        cmd += ["--window", a.window]
    log = open(work + "/serve.log", "w")
    node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and "serve: DISTTRAIN on port" not in open(work + "/serve.log").read():
            time.sleep(0.1)
        time.sleep(0.5)

        scu = AE(ae_title="PYNET")
        scu.add_requested_context(Verification)
        scu.add_requested_context(CTImageStorage, [sent[0].file_meta.TransferSyntaxUID])
        bad = AE(ae_title="BAD")
        bad.add_requested_context(Verification)
        assoc = bad.associate("127.0.0.1", nport, ae_title="DISTTRAIN")
        rej = assoc.acceptor.primitive if assoc.is_rejected else None
        check(assoc.is_rejected and rej is not None and rej.result == 0x01 and rej.result_source == 0x01 and rej.diagnostic == 0x03,
              "calling AE title BAD rejected: A-ASSOCIATE-RJ permanent, service user, calling AE title not recognised"
              + (f" (result {rej.result}, source {rej.result_source}, reason {rej.diagnostic})" if rej else ""))
        assoc = scu.associate("127.0.0.1", nport, ae_title="DISTTRAIN")
        check(assoc.is_established, "association from PYNET accepted")
        st = assoc.send_c_echo()
        check(st is not None and st.Status == 0x0000, "C-ECHO status 0x0000")
        statuses = [assoc.send_c_store(d).Status for d in sent]
        check(all(s == 0x0000 for s in statuses), f"C-STORE of {len(sent)} instances, statuses {sorted(set(statuses))}")
        assoc.release()

        deadline = time.time() + a.timeout
        while time.time() < deadline:
            with lock:
                n_sc = sum(d.SOPClassUID == SC_CLASS for d in received)
                n_sr = sum(d.SOPClassUID == SR_CLASS for d in received)
            if n_sr >= 1 and n_sc >= len(sent):
                break
            time.sleep(0.25)
        time.sleep(1)
        srs = [d for d in received if d.SOPClassUID == SR_CLASS]
        scs = [d for d in received if d.SOPClassUID == SC_CLASS]
        print(f"received {len(received)} objects: {len(srs)} Comprehensive SR, {len(scs)} Secondary Capture")
        check(len(srs) == 1, "one Comprehensive SR")
        check(len(scs) == len(sent), f"one Secondary Capture per slice ({len(scs)} for {len(sent)})")

        csvs = glob.glob(work + "/serve/series-*/results/series.csv")
        mean = None
        if csvs:
            rows = open(csvs[0]).read().strip().split("\n")
            mean = float(rows[1].split(",")[2])
            print(f"series.csv: {rows[1]}")
        check(mean is not None, "the node wrote series.csv")

        if srs:
            sr = srs[0]
            check(sr.StudyInstanceUID == study, "SR in the source study")
            check(sr.PatientID == sent[0].PatientID, "SR carries the source's patient")
            doc = hd.sr.srread(write_temp(sr, work + "/sr.dcm"))
            nums = hd.sr.utils.find_content_items(doc, value_type=hd.sr.ValueTypeValues.NUM, recursive=True)
            series_level = [n for n in nums if not any(c.ValueType == "IMAGE" for c in getattr(n, "ContentSequence", []))]
            per_slice = [n for n in nums if n not in series_level]
            print("SR NUM items: " + "; ".join(f"{n.ConceptNameCodeSequence[0].CodeMeaning} = {n.MeasuredValueSequence[0].NumericValue}"
                                                   for n in series_level) + f"; {len(per_slice)} per-slice")
            check(len(series_level) == 1, "one series-level probability (a NUM that names no image)")
            if series_level and mean is not None:
                p = float(series_level[0].MeasuredValueSequence[0].NumericValue)
                check(abs(p - mean) <= 1e-4, f"SR probability {p:.6f} == series.csv mean {mean:.6f} within 1e-4 (|diff| {abs(p - mean):.2e})")
            check(len(per_slice) == len(sent), f"one per-slice probability per slice ({len(per_slice)})")
            evidence = {r.ReferencedSOPInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                        for s in e.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
            check(evidence == sent_uids, f"SR evidence references every instance sent ({len(evidence & sent_uids)}/{len(sent_uids)})")
        if scs:
            named = [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in scs]
            check(set(named) == sent_uids and len(named) == len(sent_uids), "each Secondary Capture names its own source slice")
            check(all(d.StudyInstanceUID == study for d in scs), "Secondary Captures in the source study")
            check(len({d.SeriesInstanceUID for d in scs}) == 1, "Secondary Captures in one series")
            shapes = {d.pixel_array.shape for d in scs}
            check(all(d.PhotometricInterpretation == "RGB" for d in scs) and all(len(s) == 3 and s[2] == 3 for s in shapes),
                  f"RGB overlays {sorted(shapes)}")
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            rc = node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            rc = None
        check(rc == 0, f"serve exits 0 on SIGTERM (rc {rc})")
        scp.shutdown()
        log.close()
        print("--- serve log ---")
        print(open(work + "/serve.log").read().rstrip())
    print(f"{'ALL OK' if not failures else str(len(failures)) + ' FAILED'}")
    return 0 if not failures else 1


def write_temp(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
