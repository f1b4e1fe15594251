// The DICOM node's network side (dicom_net.h): DCMTK's DcmSCP and DcmSCU.
#include "dicom_net.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scp.h>
#include <dcmtk/dcmnet/scu.h>
#include <dcmtk/oflog/oflog.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

void setError(char *err, size_t n, const std::string &s) {
    if (err && n) std::snprintf(err, n, "%s", s.c_str());
}

/// dcmnet reports through our log callback; its own logger would print to stderr.
void quietNetworkLoggers() {
    for (const char *name : {"dcmtk.dcmnet", "dcmtk.dcmdata"})
        OFLog::getLogger(name).setLogLevel(OFLogger::FATAL_LOG_LEVEL);
}

std::string trimmed(const char *s) {
    std::string t(s ? s : "");
    while (!t.empty() && t.back() == ' ') t.pop_back();
    while (!t.empty() && t.front() == ' ') t.erase(t.begin());
    return t;
}

/// Printable ASCII only, at most 64 characters: what a peer sends never reaches the log raw.
std::string printable(const std::string &s) {
    std::string out;
    for (char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
    return out;
}

std::string joined(const std::set<std::string> &names) {
    std::string out;
    int k = 0;
    for (auto &n : names) {
        if (k++ == 8) return out + ", ...";
        out += (out.empty() ? "" : ", ") + printable(n);
    }
    return out;
}

std::string statusHex(Uint16 s) {
    char b[8];
    std::snprintf(b, sizeof b, "%04X", s);
    return b;
}

class StorageNode : public DcmSCP {
public:
    explicit StorageNode(const dn_scp_config &c) : cfg(c) {
        for (int i = 0; i < c.n_allow; ++i) allow.insert(trimmed(c.allow[i]));
    }

    const dn_scp_config &cfg;
    std::set<std::string> allow;
    unsigned long long received = 0;  // file counter in incoming_dir
    // The association in hand.
    std::string calling, called, host;
    int stored = 0, refused = 0, echoes = 0;
    std::map<std::string, int> refusedBy;  // status -> count
    std::set<std::string> notOffered;      // SOP classes proposed and not accepted
    bool associationLogged = false;

    void log(const std::string &line) {
        if (cfg.log) cfg.log(cfg.ctx, line.c_str());
    }
    bool stopWanted() { return cfg.stop && cfg.stop(cfg.ctx); }

protected:
    void notifyAssociationRequest(const T_ASC_Parameters &params, DcmSCPActionType &action) override {
        calling = printable(trimmed(params.DULparams.callingAPTitle));
        called = printable(trimmed(params.DULparams.calledAPTitle));
        host = printable(trimmed(params.DULparams.callingPresentationAddress));
        stored = refused = echoes = 0;
        refusedBy.clear();
        notOffered.clear();
        associationLogged = false;
        action = DCMSCP_ACTION_UNDEFINED;
        // The abstract syntaxes proposed that we do not take: named where none is left.
        std::set<std::string> ours(cfg.sop_classes, cfg.sop_classes + cfg.n_sop_classes);
        ours.insert(UID_VerificationSOPClass);
        T_ASC_Parameters *p = const_cast<T_ASC_Parameters *>(&params);
        for (int i = 0; i < ASC_countPresentationContexts(p); ++i) {
            T_ASC_PresentationContext pc;
            if (ASC_getPresentationContext(p, i, &pc).good() && !ours.count(pc.abstractSyntax))
                notOffered.insert(dcmFindNameOfUID(pc.abstractSyntax, pc.abstractSyntax));
        }
    }

    OFBool checkCalledAETitleAccepted(const OFString &calledAE) override { return trimmed(calledAE.c_str()) == trimmed(cfg.aet); }

    OFBool checkCallingAETitleAccepted(const OFString &callingAE) override {
        return allow.empty() || allow.count(trimmed(callingAE.c_str())) > 0;
    }

    void refuseAssociation(const DcmRefuseReasonType reason) override {
        std::string why;
        switch (reason) {
        case DCMSCP_CALLING_AE_TITLE_NOT_RECOGNIZED: why = "calling AE title not in --allow"; break;
        case DCMSCP_CALLED_AE_TITLE_NOT_RECOGNIZED: why = "called AE title '" + called + "' is not " + trimmed(cfg.aet); break;
        case DCMSCP_NO_PRESENTATION_CONTEXTS:
            why = "no acceptable presentation context (CT Image Storage or Verification)" +
                  (notOffered.empty() ? std::string() : "; proposed " + joined(notOffered));
            break;
        case DCMSCP_BAD_APPLICATION_CONTEXT_NAME: why = "not the DICOM application context"; break;
        default: why = "refused"; break;
        }
        log("association from " + calling + "@" + host + " rejected (A-ASSOCIATE-RJ): " + why);
        associationLogged = true;
        DcmSCP::refuseAssociation(reason);
    }

    void notifyAssociationTermination() override {
        if (associationLogged) return;
        associationLogged = true;
        std::string line = "association from " + calling + "@" + host + ": " + std::to_string(stored) + " stored, " +
                           std::to_string(refused) + " refused";
        for (auto &kv : refusedBy) line += " (" + std::to_string(kv.second) + " with status " + kv.first + ")";
        if (echoes) line += ", " + std::to_string(echoes) + " echo";
        log(line);
    }

    OFBool stopAfterCurrentAssociation() override { return stopWanted(); }
    OFBool stopAfterConnectionTimeout() override { return stopWanted(); }

    OFCondition handleIncomingCommand(T_DIMSE_Message *msg, const DcmPresentationContextInfo &info) override {
        if (msg->CommandField == DIMSE_C_ECHO_RQ) {
            ++echoes;
            return DcmSCP::handleIncomingCommand(msg, info);
        }
        if (msg->CommandField != DIMSE_C_STORE_RQ) return DIMSE_BADCOMMANDTYPE;  // dcmnet aborts: we offer no other service
        T_DIMSE_C_StoreRQ &req = msg->msg.CStoreRQ;
        char name[64];
        std::snprintf(name, sizeof name, "/recv-%d-%06llu.part", (int)getpid(), ++received);
        const std::string path = std::string(cfg.incoming_dir) + name;
        OFCondition cond = receiveSTORERequest(req, info.presentationContextID, OFString(path.c_str()));
        if (cond.bad()) {
            unlink(path.c_str());
            ++refused;
            refusedBy["(not received: " + std::string(cond.text()) + ")"]++;
            return cond;
        }
        char comment[80] = {0};
        const Uint16 status = decide(req, path, comment, sizeof comment);
        if (status != STATUS_Success) {
            unlink(path.c_str());
            ++refused;
            refusedBy[statusHex(status)]++;
        } else {
            ++stored;
        }
        return sendResponse(info.presentationContextID, req, status, comment);
    }

private:
    Uint16 decide(const T_DIMSE_C_StoreRQ &req, const std::string &path, char *comment, size_t n) {
        DcmFileFormat file;
        struct stat st {};
        if (stat(path.c_str(), &st) != 0 || file.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 4096).bad()) {
            std::snprintf(comment, n, "data set unreadable");
            return STATUS_STORE_Error_CannotUnderstand;
        }
        DcmDataset *ds = file.getDataset();
        auto get = [&](const DcmTagKey &k) {
            OFString v;
            ds->findAndGetOFString(k, v);
            return std::string(v.c_str());
        };
        const std::string sopClass = get(DCM_SOPClassUID), sopInstance = get(DCM_SOPInstanceUID), study = get(DCM_StudyInstanceUID),
                          series = get(DCM_SeriesInstanceUID), patient = get(DCM_PatientName);
        OFString xfer;
        file.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, xfer);
        dn_instance in{};
        in.path = path.c_str();
        in.bytes = (unsigned long long)st.st_size;
        in.calling_aet = calling.c_str();
        in.request_sop_class = req.AffectedSOPClassUID;
        in.request_sop_instance = req.AffectedSOPInstanceUID;
        in.sop_class = sopClass.c_str();
        in.sop_instance = sopInstance.c_str();
        in.study_uid = study.c_str();
        in.series_uid = series.c_str();
        in.transfer_syntax = xfer.c_str();
        in.patient_name = patient.c_str();
        return cfg.store ? cfg.store(cfg.ctx, &in, comment, n) : STATUS_STORE_Refused_OutOfResources;
    }

    /// The C-STORE-RSP, with an ErrorComment where the status is not success.
    OFCondition sendResponse(T_ASC_PresentationContextID pres, const T_DIMSE_C_StoreRQ &req, Uint16 status, const char *comment) {
        if (status == STATUS_Success || !comment[0]) return sendSTOREResponse(pres, req, status);
        T_DIMSE_Message rsp;
        std::memset(&rsp, 0, sizeof rsp);
        rsp.CommandField = DIMSE_C_STORE_RSP;
        T_DIMSE_C_StoreRSP &r = rsp.msg.CStoreRSP;
        r.MessageIDBeingRespondedTo = req.MessageID;
        r.DimseStatus = status;
        r.DataSetType = DIMSE_DATASET_NULL;
        OFStandard::strlcpy(r.AffectedSOPClassUID, req.AffectedSOPClassUID, sizeof r.AffectedSOPClassUID);
        OFStandard::strlcpy(r.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID, sizeof r.AffectedSOPInstanceUID);
        r.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
        DcmDataset detail;
        detail.putAndInsertString(DCM_ErrorComment, std::string(comment).substr(0, 64).c_str());
        return sendDIMSEMessage(pres, &rsp, NULL, &detail);
    }
};

}  // namespace

extern "C" int dn_scp_run(const dn_scp_config *c, char *err, size_t errlen) {
    try {
        quietNetworkLoggers();
        StorageNode node(*c);
        node.setAETitle(c->aet);
        node.setPort(c->port);
        node.setRespondWithCalledAETitle(OFFalse);
        node.setMaxReceivePDULength(c->max_pdu ? c->max_pdu : ASC_DEFAULTMAXPDU);
        node.setACSETimeout(c->timeout);
        node.setDIMSETimeout(c->timeout);
        node.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
        // Nonblocking accept with a 1 s timeout: the stop callback is asked every second.
        node.setConnectionBlockingMode(DUL_NOBLOCK);
        node.setConnectionTimeout(1);
        node.setHostLookupEnabled(OFFalse);
        OFList<OFString> xfers;
        for (int i = 0; i < c->n_transfer_syntaxes; ++i) xfers.push_back(c->transfer_syntaxes[i]);
        for (int i = 0; i < c->n_sop_classes; ++i) {
            OFCondition cond = node.addPresentationContext(c->sop_classes[i], xfers);
            if (cond.bad()) {
                setError(err, errlen, std::string("presentation context ") + c->sop_classes[i] + ": " + cond.text());
                return 1;
            }
        }
        OFList<OFString> echoXfers;
        echoXfers.push_back(UID_LittleEndianExplicitTransferSyntax);
        echoXfers.push_back(UID_LittleEndianImplicitTransferSyntax);
        node.addPresentationContext(UID_VerificationSOPClass, echoXfers);
        OFCondition cond = node.listen();
        if (cond.good() || cond == NET_EC_StopAfterConnectionTimeout || cond == NET_EC_StopAfterAssociation) return 0;
        setError(err, errlen, std::string("port ") + std::to_string(c->port) + ": " + cond.text());
        return 1;
    } catch (const std::exception &e) {
        setError(err, errlen, e.what());
        return 1;
    }
}

extern "C" int dn_store_scu(const char *aet, const char *peer_aet, const char *host, uint16_t port, int timeout,
                            const char *const *files, int n, uint16_t *statuses, char *err, size_t errlen) {
    try {
        quietNetworkLoggers();
        for (int i = 0; i < n; ++i) statuses[i] = 0xFFFF;
        // One presentation context per SOP class, offering each file's own transfer syntax and the two uncompressed ones.
        std::map<std::string, std::set<std::string>> contexts;
        std::vector<std::pair<std::string, std::string>> kinds(n);
        for (int i = 0; i < n; ++i) {
            DcmFileFormat f;
            OFCondition st = f.loadFile(files[i], EXS_Unknown, EGL_noChange, 4096);
            OFString cls, xfer;
            if (st.bad() || f.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPClassUID, cls).bad() ||
                f.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, xfer).bad()) {
                setError(err, errlen, std::string("'") + files[i] + "': not a DICOM file with a meta header" +
                                          (st.bad() ? std::string(" (") + st.text() + ")" : ""));
                return 1;
            }
            kinds[i] = {cls.c_str(), xfer.c_str()};
            contexts[cls.c_str()].insert(xfer.c_str());
        }
        if (contexts.size() > 127) {
            setError(err, errlen, "more than 127 SOP classes in one association");
            return 1;
        }
        DcmSCU scu;
        scu.setAETitle(aet);
        scu.setPeerAETitle(peer_aet);
        scu.setPeerHostName(host);
        scu.setPeerPort(port);
        scu.setACSETimeout(timeout);
        scu.setDIMSETimeout(timeout);
        scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
        scu.setConnectionTimeout(timeout);
        for (auto &kv : contexts) {
            OFList<OFString> xfers;
            for (auto &x : kv.second) xfers.push_back(x.c_str());
            for (const char *u : {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax})
                if (!kv.second.count(u)) xfers.push_back(u);
            scu.addPresentationContext(kv.first.c_str(), xfers);
        }
        const std::string peer = std::string(peer_aet) + "@" + host + ":" + std::to_string(port);
        OFCondition cond = scu.initNetwork();
        if (cond.good()) cond = scu.negotiateAssociation();
        if (cond.bad()) {
            setError(err, errlen, peer + ": association failed (" + std::string(cond.text()) + ")");
            return 1;
        }
        int failed = 0;
        std::string first;
        for (int i = 0; i < n; ++i) {
            T_ASC_PresentationContextID pres = scu.findPresentationContextID(kinds[i].first.c_str(), kinds[i].second.c_str());
            if (pres == 0) pres = scu.findAnyPresentationContextID(kinds[i].first.c_str(), kinds[i].second.c_str());
            if (pres == 0) {
                ++failed;
                if (first.empty()) first = std::string("'") + files[i] + "': " + peer + " accepted no presentation context for SOP class " + kinds[i].first;
                continue;
            }
            Uint16 rsp = 0xFFFF;
            cond = scu.sendSTORERequest(pres, OFFilename(files[i]), NULL, rsp);
            if (cond.bad()) {
                ++failed;
                if (first.empty()) first = std::string("'") + files[i] + "': C-STORE to " + peer + " failed (" + cond.text() + ")";
                break;  // the association is gone
            }
            statuses[i] = rsp;
            if (rsp != STATUS_Success && (rsp & 0xF000) != 0xB000) {
                ++failed;
                if (first.empty()) first = std::string("'") + files[i] + "': " + peer + " answered status " + statusHex(rsp);
            }
        }
        if (scu.isConnected()) scu.releaseAssociation();
        if (failed) {
            setError(err, errlen, first + (failed > 1 ? " (and " + std::to_string(failed - 1) + " more)" : ""));
            return 1;
        }
        return 0;
    } catch (const std::exception &e) {
        setError(err, errlen, e.what());
        return 1;
    }
}
