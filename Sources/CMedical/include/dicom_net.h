// A DICOM storage node over DCMTK's dcmnet: an SCP (C-ECHO, C-STORE) that
// hands every received instance to a callback, and an SCU that sends files by
// C-STORE. Plain C for Swift; all DCMTK types stay in dicom_net.cpp.
#ifndef DISTTRAIN_DICOM_NET_H
#define DISTTRAIN_DICOM_NET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// One instance as received: `path` is a DICOM file (meta header + data set,
/// bit for bit as sent) the callback may move; the UIDs are from its data set
/// ("" where absent), the request's from the C-STORE-RQ.
typedef struct {
    const char *path;
    unsigned long long bytes;
    const char *calling_aet;
    const char *request_sop_class;
    const char *request_sop_instance;
    const char *sop_class;
    const char *sop_instance;
    const char *study_uid;
    const char *series_uid;
    const char *transfer_syntax;
    const char *patient_name;
} dn_instance;

/// Decides on an instance: the DIMSE status of the C-STORE-RSP (0x0000 success;
/// 0xA700 out of resources, 0xA900 data set does not match SOP class, 0xC000
/// cannot understand). On success the callback owns the file (moved it); on
/// any other status the node deletes it. `comment` (up to 64 characters)
/// goes into the response's ErrorComment.
typedef uint16_t (*dn_store_fn)(void *ctx, const dn_instance *instance, char *comment, size_t comment_size);
/// One line for the log (no newline).
typedef void (*dn_log_fn)(void *ctx, const char *line);
/// Nonzero: stop listening (after the association in hand).
typedef int (*dn_stop_fn)(void *ctx);

typedef struct {
    const char *aet;                 // our AE title (the called AE title must match it)
    uint16_t port;
    const char *const *allow;        // calling AE titles accepted; n_allow 0: any
    int n_allow;
    const char *const *sop_classes;  // storage SOP classes accepted (Verification is always)
    int n_sop_classes;
    const char *const *transfer_syntaxes;  // in order of preference
    int n_transfer_syntaxes;
    const char *incoming_dir;        // where instances are received before the callback
    int timeout;                     // ACSE and DIMSE timeout, seconds
    uint32_t max_pdu;                // our maximum PDU receive length
    void *ctx;
    dn_store_fn store;
    dn_log_fn log;
    dn_stop_fn stop;
} dn_scp_config;

/// Listens until `stop` says so (checked every second and after each
/// association). 0 when stopped as asked; otherwise 1 and `err`.
int dn_scp_run(const dn_scp_config *config, char *err, size_t errlen);

/// Sends `files` (DICOM files with meta headers) in one association from `aet`
/// to `peer_aet`@`host`:`port`. `statuses[i]` gets each file's C-STORE-RSP
/// status (0xFFFF where it was not sent). 0 when every file was stored with
/// status 0x0000 (or a warning 0xB...); 1 and `err` otherwise.
int dn_store_scu(const char *aet, const char *peer_aet, const char *host, uint16_t port, int timeout,
                 const char *const *files, int n, uint16_t *statuses, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
