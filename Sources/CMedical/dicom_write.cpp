// DICOM results behind include/dicom_write.h: the Comprehensive SR of a
// series' probabilities (dcmsr's DSRDocument) and its Secondary Capture
// overlays (dcmdata), both placed in the source study, new series each.
//
// The SR's content tree is DICOM's TID 1500 "Measurement Report" (PS3.16),
// declared in ContentTemplateSequence (1500, DCMR):
//
//   CONTAINER (126000, DCM, "Imaging Measurement Report")
//     HAS CONCEPT MOD  CODE   (121049, DCM, "Language of Content Item and Descendants") = (eng, RFC5646, "English")
//     HAS OBS CONTEXT  CODE   (121005, DCM, "Observer Type") = (121007, DCM, "Device")
//     HAS OBS CONTEXT  UIDREF (121012, DCM, "Device Observer UID")            (TID 1004)
//     HAS OBS CONTEXT  TEXT   (121013 / 121014 / 121015) name, manufacturer, model
//     HAS CONCEPT MOD  CODE   (121058, DCM, "Procedure reported") = (25045-6, LN, "CT unspecified body region") (CID 100)
//     CONTAINS CONTAINER (111028, DCM, "Image Library")                        (TID 1600)
//       CONTAINS CONTAINER (126200, DCM, "Image Library Group")
//         CONTAINS IMAGE  each source instance
//     CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
//       CONTAINS CONTAINER (125007, DCM, "Measurement Group")                 the series (TID 1501)
//         HAS OBS CONTEXT TEXT   (112039, DCM, "Tracking Identifier") = "series"
//         HAS OBS CONTEXT UIDREF (112040, DCM, "Tracking Unique Identifier")
//         HAS CONCEPT MOD CODE   (121071, DCM, "Finding") = the finding (840539006, SCT, "COVID-19")
//         CONTAINS NUM (122157, DCM, "Probability") = mean of the slices, unit (1, UCUM, "no units")   (TID 300)
//           HAS CONCEPT MOD CODE (121401, DCM, "Derivation") = (373098007, SCT, "Mean")
//           HAS CONCEPT MOD TEXT (111001 / 111003 / 111002) algorithm name, version, parameters (TID 4019)
//         CONTAINS CODE <the finding> = (52101004, SCT, "Present") or (272519000, SCT, "Absent")  (CID 241)
//       CONTAINS CONTAINER (125007, DCM, "Measurement Group")                 one per slice
//         HAS OBS CONTEXT TEXT / UIDREF  tracking identifier "slice K", its UID
//         HAS CONCEPT MOD CODE (121071, DCM, "Finding") = the finding
//         CONTAINS NUM (122157, DCM, "Probability") = the slice's
//           INFERRED FROM IMAGE (121112, DCM, "Source of Measurement") = the source instance (and frame)
//
// Every source instance is listed in CurrentRequestedProcedureEvidenceSequence.
// As in medical.cpp, no C++ exception crosses extern "C".
#include "guarded.hpp"
#include "dicom_write.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <set>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcpath.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "dcmtk/dcmsr/codes/dcm.h"
#include "dcmtk/dcmsr/codes/ucum.h"

#include <openssl/evp.h>

namespace {

using cmedical::fail;
using cmedical::Refusal;
using cmedical::refuse;
using cmedical::guarded;

void check(const OFCondition &c, const std::string &what) {
    if (c.bad()) refuse(what + " (" + c.text() + ")");
}

/// A copy of `e` into `to` (replacing its own); the copy is freed when `to` does not take it.
void insertCopy(DcmItem *to, DcmElement *e) {
    auto *copy = OFstatic_cast(DcmElement *, e->clone());
    if (!copy) refuse("out of memory");
    OFCondition c = to->insert(copy, OFTrue);
    if (c.bad()) { delete copy; refuse(std::string("cannot copy an element (") + c.text() + ")"); }
}

std::string text(const char *s) { return s ? s : ""; }

/// A DICOM UID root: digits and dots, components without leading zeros, short
/// enough that DCMTK's suffix (host, process, time, counter) fits in 64 characters.
void checkRoot(const std::string &root) {
    bool ok = !root.empty() && root.size() <= 24 && root.front() != '.' && root.back() != '.';
    for (size_t i = 0; ok && i < root.size(); ++i) {
        char c = root[i];
        if (c == '.') ok = root[i + 1] != '.';
        else if (c < '0' || c > '9') ok = false;
        else if (c == '0' && (i == 0 || root[i - 1] == '.') && i + 1 < root.size() && root[i + 1] != '.') ok = false;
    }
    if (!ok) refuse("UID root '" + root + "' is not digits and dots of at most 24 characters (e.g. 1.2.826.0.1.3680043.10.543)");
}

std::string newUID(const char *root) {
    char buf[100];
    std::string r = text(root);
    if (r.empty()) {
        dcmGenerateUniqueIdentifier(buf);  // DCMTK's SITE_INSTANCE_UID_ROOT
    } else {
        checkRoot(r);
        dcmGenerateUniqueIdentifier(buf, r.c_str());
    }
    return buf;
}

/// One source file's header (the pixel data are not read: long values are left on disk).
struct Source {
    DcmFileFormat ff;
    std::string path, sopClass, sopInstance, study, series;
};

std::string get(DcmItem *ds, const DcmTagKey &key) {
    OFString v;
    if (ds->findAndGetOFStringArray(key, v).bad()) return "";
    return v.c_str();
}

void readSource(const std::string &path, Source &s) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) refuse("'" + path + "': cannot be read");
    if (!S_ISREG(st.st_mode)) refuse("'" + path + "': not a regular file");
    s.path = path;
    OFCondition c = s.ff.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 4096);
    if (c.bad()) refuse("'" + path + "': not a readable DICOM file (" + c.text() + ")");
    DcmDataset *ds = s.ff.getDataset();
    s.sopClass = get(ds, DCM_SOPClassUID);
    s.sopInstance = get(ds, DCM_SOPInstanceUID);
    s.study = get(ds, DCM_StudyInstanceUID);
    s.series = get(ds, DCM_SeriesInstanceUID);
    if (s.sopClass.empty() || s.sopInstance.empty() || s.study.empty() || s.series.empty())
        refuse("'" + path + "': lacks SOPClassUID, SOPInstanceUID, StudyInstanceUID or SeriesInstanceUID, so a result cannot refer to it");
}

/// The sources of `slices`, each file read once, all of one study.
std::vector<Source *> readSources(const dt_result_slice *slices, int n, std::map<std::string, Source> &files) {
    if (n <= 0 || !slices) refuse("no slices to report");
    std::vector<Source *> out;
    for (int i = 0; i < n; ++i) {
        std::string p = text(slices[i].path);
        auto it = files.find(p);
        if (it == files.end()) {
            it = files.emplace(std::piecewise_construct, std::forward_as_tuple(p), std::forward_as_tuple()).first;
            readSource(p, it->second);
        }
        out.push_back(&it->second);
        if (out.front()->study != it->second.study)
            refuse("'" + p + "' is of study " + it->second.study + ", '" + out.front()->path + "' of study " + out.front()->study +
                   ": one result document covers one study");
    }
    return out;
}

/// Whether a reference to `sopClass` may carry ReferencedFrameNumber: not for the classic
/// single-frame image classes (CR, CT, MR, PET, Secondary Capture; PS3.3 C.4.11.1 and
/// dciodvfy refuse frame numbers into them, even where a file of such a class holds frames).
bool multiFrameClass(const std::string &sopClass) {
    static const char *single[] = {UID_ComputedRadiographyImageStorage, UID_CTImageStorage, UID_MRImageStorage,
                                   UID_PositronEmissionTomographyImageStorage, UID_SecondaryCaptureImageStorage};
    for (const char *u : single) if (sopClass == u) return false;
    return true;
}

std::string now(const char *format) {
    OFString s;
    if (format[0] == 'D') DcmDate::getCurrentDate(s);
    else DcmTime::getCurrentTime(s, OFTrue /* seconds */, OFFalse);
    return s.c_str();
}

/// Builds the content tree with a cursor: `child` adds below the current item,
/// `next` after it, `up` returns to the parent; each checks DCMTK's answer
/// (a relationship the IOD does not allow is refused there).
struct Tree {
    DSRDocumentTree &t;
    void child(DSRTypes::E_RelationshipType r, DSRTypes::E_ValueType v, const DSRCodedEntryValue &name) {
        check(t.addChildContentItem(r, v, name), "cannot add a content item below " + std::to_string(t.getNodeID()));
    }
    void next(DSRTypes::E_RelationshipType r, DSRTypes::E_ValueType v, const DSRCodedEntryValue &name) {
        check(t.addContentItem(r, v, name), "cannot add a content item after " + std::to_string(t.getNodeID()));
    }
    void up() {
        if (t.goUp() == 0) refuse("SR tree: no parent");
    }
    DSRContentItem &item() { return t.getCurrentContentItem(); }
    void text(const std::string &v) { check(item().setStringValue(v.c_str()), "cannot set the text '" + v + "'"); }
    void code(const DSRCodedEntryValue &v) { check(item().setCodeValue(v), "cannot set a code value"); }
    void num(double v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.6f", v);
        check(item().setNumericValue(DSRNumericMeasurementValue(buf, DSRCodedEntryValue("1", "UCUM", "no units"))),
              std::string("cannot set the number ") + buf);
    }
};

DSRCodedEntryValue finding(const dt_result_info *info) {
    return DSRCodedEntryValue(text(info->finding_value).c_str(), text(info->finding_scheme).c_str(), text(info->finding_meaning).c_str());
}

/// Patient and study modules of `from` into `to`, as they are (with the character set
/// their text is in); Type 2 elements the source lacks are written empty.
void copyPatientStudy(DcmItem *from, DcmItem *to) {
    const DcmTagKey type2[] = {DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_PatientSex, DCM_StudyDate, DCM_StudyTime,
                               DCM_ReferringPhysicianName, DCM_StudyID, DCM_AccessionNumber};
    const DcmTagKey type3[] = {DCM_SpecificCharacterSet, DCM_StudyDescription, DCM_IssuerOfPatientID, DCM_PatientAge,
                               DCM_PatientSize, DCM_PatientWeight};
    DcmElement *e = nullptr;
    for (const DcmTagKey &k : type2) {
        if (from->findAndGetElement(k, e).good() && e) insertCopy(to, e);
        else check(to->insertEmptyElement(k), "cannot add an empty element");
    }
    for (const DcmTagKey &k : type3)
        if (from->findAndGetElement(k, e).good() && e) insertCopy(to, e);
    check(to->putAndInsertString(DCM_StudyInstanceUID, get(from, DCM_StudyInstanceUID).c_str()), "cannot set StudyInstanceUID");
}

/// PatientOrientation of an image cut as the source: the patient direction of its rows
/// and columns (DICOM PS3.3 C.7.6.1.1.1: L/R, P/A, H/F by the dominant component), or "".
std::string patientOrientation(DcmItem *ds) {
    double o[6];
    for (int i = 0; i < 6; ++i)
        if (ds->findAndGetFloat64(DCM_ImageOrientationPatient, o[i], (unsigned long)i).bad()) return "";
    auto letter = [](const double *v) {
        int k = 0;
        for (int i = 1; i < 3; ++i) if (std::abs(v[i]) > std::abs(v[k])) k = i;
        const char *pos = "LPH", *neg = "RAF";
        return std::string(1, v[k] >= 0 ? pos[k] : neg[k]);
    };
    return letter(o) + "\\" + letter(o + 3);
}

}  // namespace

extern "C" int dt_new_uid(const char *root, char *out, char *err, int errlen) {
    return guarded(err, errlen, [&] { std::snprintf(out, 65, "%s", newUID(root).c_str()); });
}

extern "C" int dt_write_sr(const char *path, const dt_result_info *info, const dt_result_slice *slices, int n,
                           const char *series_uid, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        std::map<std::string, Source> files;
        std::vector<Source *> src = readSources(slices, n, files);
        DcmDataset *first = src.front()->ff.getDataset();

        DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
        check(doc.readStudyData(*first), "'" + src.front()->path + "': its patient and study data cannot be taken over");
        const char *cs = nullptr;
        if (first->findAndGetString(DCM_SpecificCharacterSet, cs).good() && cs && *cs)
            check(doc.setSpecificCharacterSet(cs, OFFalse), "cannot set SpecificCharacterSet");
        check(doc.createNewSeriesInStudy(src.front()->study.c_str()), "'" + src.front()->path + "': StudyInstanceUID is not a UID");
        check(doc.setSeriesNumber(std::to_string(info->sr_series_number).c_str()), "cannot set SeriesNumber");
        check(doc.setSeriesDescription(text(info->sr_series_description).c_str()), "cannot set SeriesDescription");
        check(doc.setInstanceNumber("1"), "cannot set InstanceNumber");
        check(doc.setManufacturer(text(info->manufacturer).c_str()), "cannot set Manufacturer");
        check(doc.setManufacturerModelName(text(info->model_name).c_str()), "cannot set ManufacturerModelName");
        check(doc.setSoftwareVersions(text(info->software_versions).c_str()), "cannot set SoftwareVersions");

        Tree t{doc.getTree()};
        using R = DSRTypes;
        check(t.t.addContentItem(R::RT_isRoot, R::VT_Container, CODE_DCM_ImagingMeasurementReport), "cannot add the root container");
        t.child(R::RT_hasConceptMod, R::VT_Code, CODE_DCM_LanguageOfContentItemAndDescendants);
        t.code(DSRCodedEntryValue("eng", "RFC5646", "English"));
        t.next(R::RT_hasObsContext, R::VT_Code, CODE_DCM_ObserverType);
        t.code(CODE_DCM_Device);
        t.next(R::RT_hasObsContext, R::VT_UIDRef, CODE_DCM_DeviceObserverUID);
        t.text(text(info->device_uid));
        t.next(R::RT_hasObsContext, R::VT_Text, CODE_DCM_DeviceObserverName);
        t.text(text(info->algorithm_name));
        t.next(R::RT_hasObsContext, R::VT_Text, CODE_DCM_DeviceObserverManufacturer);
        t.text(text(info->manufacturer));
        t.next(R::RT_hasObsContext, R::VT_Text, CODE_DCM_DeviceObserverModelName);
        t.text(text(info->model_name));
        // Procedure reported, from CID 100 (extensible): a CT, else an imaging procedure.
        t.next(R::RT_hasConceptMod, R::VT_Code, CODE_DCM_ProcedureReported);
        t.code(get(first, DCM_Modality) == "CT" ? DSRCodedEntryValue("25045-6", "LN", "CT unspecified body region")
                                                : DSRCodedEntryValue("363679005", "SCT", "Imaging procedure"));
        // Image Library (TID 1600): every source instance once.
        t.next(R::RT_contains, R::VT_Container, CODE_DCM_ImageLibrary);
        t.child(R::RT_contains, R::VT_Container, CODE_DCM_ImageLibraryGroup);
        {
            std::set<std::string> seen;
            bool firstImage = true;
            for (Source *s : src) {
                if (!seen.insert(s->sopInstance).second) continue;
                if (t.t.addContentItem(R::RT_contains, R::VT_Image, firstImage ? R::AM_belowCurrent : R::AM_afterCurrent) == 0)
                    refuse("cannot add an image to the image library");
                firstImage = false;
                check(t.item().setImageReference(DSRImageReferenceValue(s->sopClass.c_str(), s->sopInstance.c_str())),
                      "'" + s->path + "': cannot refer to its instance (SOPClassUID '" + s->sopClass + "', SOPInstanceUID '" +
                          s->sopInstance + "': not valid UIDs?)");
            }
            t.up();
        }
        t.up();
        t.next(R::RT_contains, R::VT_Container, CODE_DCM_ImagingMeasurements);

        // The series.
        t.child(R::RT_contains, R::VT_Container, CODE_DCM_MeasurementGroup);
        t.child(R::RT_hasObsContext, R::VT_Text, CODE_DCM_TrackingIdentifier);
        t.text("series");
        t.next(R::RT_hasObsContext, R::VT_UIDRef, CODE_DCM_TrackingUniqueIdentifier);
        t.text(newUID(info->uid_root));
        t.next(R::RT_hasConceptMod, R::VT_Code, CODE_DCM_Finding);
        t.code(finding(info));
        t.next(R::RT_contains, R::VT_Num, CODE_DCM_Probability);
        t.num(info->probability);
        t.child(R::RT_hasConceptMod, R::VT_Code, CODE_DCM_Derivation);
        t.code(DSRCodedEntryValue("373098007", "SCT", "Mean"));
        t.next(R::RT_hasConceptMod, R::VT_Text, CODE_DCM_AlgorithmName);
        t.text(text(info->algorithm_name));
        t.next(R::RT_hasConceptMod, R::VT_Text, CODE_DCM_AlgorithmVersion);
        t.text(text(info->algorithm_version));
        t.next(R::RT_hasConceptMod, R::VT_Text, CODE_DCM_AlgorithmParameters);
        t.text(text(info->algorithm_parameters));
        t.up();
        t.next(R::RT_contains, R::VT_Code, finding(info));
        t.code(info->positive ? DSRCodedEntryValue("52101004", "SCT", "Present") : DSRCodedEntryValue("272519000", "SCT", "Absent"));
        t.up();

        // Each slice, after the series' group.
        for (int i = 0; i < n; ++i) {
            t.next(R::RT_contains, R::VT_Container, CODE_DCM_MeasurementGroup);
            t.child(R::RT_hasObsContext, R::VT_Text, CODE_DCM_TrackingIdentifier);
            t.text("slice " + std::to_string(i + 1) + (slices[i].frame > 0 ? " (frame " + std::to_string(slices[i].frame) + ")" : ""));
            t.next(R::RT_hasObsContext, R::VT_UIDRef, CODE_DCM_TrackingUniqueIdentifier);
            t.text(newUID(info->uid_root));
            t.next(R::RT_hasConceptMod, R::VT_Code, CODE_DCM_Finding);
            t.code(finding(info));
            t.next(R::RT_contains, R::VT_Num, CODE_DCM_Probability);
            t.num(slices[i].probability);
            t.child(R::RT_inferredFrom, R::VT_Image, CODE_DCM_SourceOfMeasurement);
            DSRImageReferenceValue ref(src[i]->sopClass.c_str(), src[i]->sopInstance.c_str());
            if (slices[i].frame > 0 && multiFrameClass(src[i]->sopClass)) ref.getFrameList().addItem(slices[i].frame);
            check(t.item().setImageReference(ref), "'" + src[i]->path + "': cannot refer to its instance (SOPClassUID '" + src[i]->sopClass +
                                                       "', SOPInstanceUID '" + src[i]->sopInstance + "': not valid UIDs?)");
            t.up();
            t.up();
        }

        std::set<std::string> listed;
        for (Source *s : src)
            if (listed.insert(s->sopInstance).second)
                check(doc.getCurrentRequestedProcedureEvidence().addItem(s->study.c_str(), s->series.c_str(), s->sopClass.c_str(),
                                                                         s->sopInstance.c_str()),
                      "'" + s->path + "': cannot list it as evidence (StudyInstanceUID '" + s->study + "', SeriesInstanceUID '" + s->series +
                          "', SOPInstanceUID '" + s->sopInstance + "': not valid UIDs?)");
        t.t.gotoRoot();
        check(t.t.setTemplateIdentification("1500", "DCMR"), "cannot set the template identification");
        // A private or local coding scheme (a class other than COVID-19) is identified, as PS3.3 C.12.1.1.2 asks.
        const std::string scheme = text(info->finding_scheme);
        if (scheme.rfind("99", 0) == 0 || scheme == "L") {
            check(doc.getCodingSchemeIdentification().addItem(scheme.c_str()), "cannot identify coding scheme " + scheme);
            check(doc.getCodingSchemeIdentification().setCodingSchemeName("disttrain class names"), "cannot name coding scheme " + scheme);
        }
        check(doc.completeDocument(), "cannot complete the document");

        DcmFileFormat ff;
        DcmDataset *ds = ff.getDataset();
        check(doc.write(*ds), "cannot build the SR data set");
        // Our UIDs (under the chosen root) replace those DSRDocument made.
        check(ds->putAndInsertString(DCM_SeriesInstanceUID, series_uid), "cannot set SeriesInstanceUID");
        check(ds->putAndInsertString(DCM_SOPInstanceUID, newUID(info->uid_root).c_str()), "cannot set SOPInstanceUID");
        check(ff.saveFile(path, EXS_LittleEndianExplicit), "cannot write");
    });
}

extern "C" int dt_write_sc(const char *path, const dt_result_info *info, const dt_result_slice *source, const uint8_t *rgb,
                           int rows, int cols, const char *series_uid, int instance_number, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        if (rows <= 0 || cols <= 0 || rows > 65535 || cols > 65535 || !rgb) refuse("an overlay of " + std::to_string(rows) + "x" +
                                                                             std::to_string(cols) + " pixels cannot be stored");
        Source s;
        readSource(text(source->path), s);
        DcmDataset *from = s.ff.getDataset();
        DcmFileFormat ff;
        DcmDataset *ds = ff.getDataset();
        copyPatientStudy(from, ds);
        const std::string date = now("D"), time = now("T");
        auto put = [&](const DcmTagKey &k, const std::string &v) {
            check(ds->putAndInsertString(k, v.c_str()), std::string("cannot set ") + DcmTag(k).getTagName());
        };
        auto put16 = [&](const DcmTagKey &k, Uint16 v) {
            check(ds->putAndInsertUint16(k, v), std::string("cannot set ") + DcmTag(k).getTagName());
        };
        put(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
        put(DCM_SOPInstanceUID, newUID(info->uid_root));
        put(DCM_InstanceCreationDate, date);
        put(DCM_InstanceCreationTime, time);
        // General Series, General Equipment, SC Equipment (ConversionType WSD: workstation).
        put(DCM_Modality, "OT");
        put(DCM_SeriesInstanceUID, series_uid);
        put(DCM_SeriesNumber, std::to_string(info->sc_series_number));
        put(DCM_SeriesDescription, text(info->sc_series_description));
        // Laterality is Type 2C (required for a paired body part): with the source's BodyPartExamined
        // (CHEST: unpaired) it is left out unless the source has one; without, it is written empty (unknown).
        const std::string part = get(from, DCM_BodyPartExamined), side = get(from, DCM_Laterality);
        if (!part.empty()) put(DCM_BodyPartExamined, part);
        if (part.empty() || !side.empty()) put(DCM_Laterality, side);
        put(DCM_Manufacturer, text(info->manufacturer));
        put(DCM_ManufacturerModelName, text(info->model_name));
        put(DCM_SoftwareVersions, text(info->software_versions));
        put(DCM_ConversionType, "WSD");
        put(DCM_SecondaryCaptureDeviceManufacturer, text(info->manufacturer));
        put(DCM_SecondaryCaptureDeviceManufacturerModelName, text(info->model_name));
        put(DCM_SecondaryCaptureDeviceSoftwareVersions, text(info->software_versions));
        put(DCM_DateOfSecondaryCapture, date);
        put(DCM_TimeOfSecondaryCapture, time);
        // General Image: what it is made from. No text is burned in (the overlay is the slice and its map).
        put(DCM_InstanceNumber, std::to_string(instance_number));
        put(DCM_PatientOrientation, patientOrientation(from));
        put(DCM_ContentDate, date);
        put(DCM_ContentTime, time);
        put(DCM_ImageType, "DERIVED\\SECONDARY");
        put(DCM_DerivationDescription, text(info->derivation_description));
        put(DCM_BurnedInAnnotation, "NO");
        DcmItem *ref = nullptr;
        check(ds->findOrCreateSequenceItem(DCM_SourceImageSequence, ref, 0), "cannot add SourceImageSequence");
        check(ref->putAndInsertString(DCM_ReferencedSOPClassUID, s.sopClass.c_str()), "cannot set ReferencedSOPClassUID");
        check(ref->putAndInsertString(DCM_ReferencedSOPInstanceUID, s.sopInstance.c_str()), "cannot set ReferencedSOPInstanceUID");
        if (source->frame > 0 && multiFrameClass(s.sopClass))
            check(ref->putAndInsertString(DCM_ReferencedFrameNumber, std::to_string(source->frame).c_str()), "cannot set ReferencedFrameNumber");
        // Image Pixel: 8-bit RGB, interleaved.
        put16(DCM_SamplesPerPixel, 3);
        put(DCM_PhotometricInterpretation, "RGB");
        put16(DCM_PlanarConfiguration, 0);
        put16(DCM_Rows, (Uint16)rows);
        put16(DCM_Columns, (Uint16)cols);
        put16(DCM_BitsAllocated, 8);
        put16(DCM_BitsStored, 8);
        put16(DCM_HighBit, 7);
        put16(DCM_PixelRepresentation, 0);
        check(ds->putAndInsertUint8Array(DCM_PixelData, rgb, (unsigned long)rows * (unsigned long)cols * 3), "cannot set PixelData");
        check(ff.saveFile(path, EXS_LittleEndianExplicit), "cannot write");
    });
}

extern "C" int dt_dicom_get(const char *path, const char *tag_path, char *out, int outlen, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        Source s;
        DcmFileFormat &ff = s.ff;
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) refuse("not a regular file");
        check(ff.loadFile(path), "not a readable DICOM file");
        ff.convertToUTF8();  // text in the file's SpecificCharacterSet, as UTF-8 (left as stored where DCMTK cannot convert)
        DcmPathProcessor proc;
        check(proc.findOrCreatePath(ff.getDataset(), tag_path, OFFalse), std::string("no ") + tag_path);
        OFList<DcmPath *> found;
        proc.getResults(found);
        if (found.empty()) refuse(std::string("no ") + tag_path);
        DcmObject *o = found.front()->back()->m_obj;
        if (!o || !o->isLeaf()) refuse(std::string(tag_path) + " is not an element with a value");
        OFString v;
        check(OFstatic_cast(DcmElement *, o)->getOFStringArray(v), std::string("cannot read ") + tag_path);
        std::snprintf(out, (size_t)outlen, "%s", v.c_str());
    });
}

namespace {
const Uint8 *pixels8(DcmFileFormat &ff, const char *path, unsigned long &n) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) refuse("not a regular file");
    check(ff.loadFile(path), "not a readable DICOM file");
    const Uint8 *px = nullptr;
    Uint16 bits = 0;
    if (ff.getDataset()->findAndGetUint16(DCM_BitsAllocated, bits).bad() || bits != 8) refuse("not an 8-bit image");
    check(ff.getDataset()->findAndGetUint8Array(DCM_PixelData, px, &n), "no PixelData");
    return px;
}
}  // namespace

extern "C" int dt_dicom_pixels8_count(const char *path, int64_t *count, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        DcmFileFormat ff;
        unsigned long n = 0;
        pixels8(ff, path, n);
        *count = (int64_t)n;
    });
}

extern "C" int dt_dicom_pixels8(const char *path, uint8_t *dst, int64_t count, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        DcmFileFormat ff;
        unsigned long n = 0;
        const Uint8 *px = pixels8(ff, path, n);
        if ((int64_t)n < count) refuse("PixelData holds " + std::to_string(n) + " bytes, not " + std::to_string(count));
        std::memcpy(dst, px, (size_t)count);
    });
}

extern "C" int dt_read_sr(const char *path, char **textOut, char *err, int errlen) {
    *textOut = nullptr;
    return guarded(err, errlen, [&] {
        DcmFileFormat ff;
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) refuse("not a regular file");
        check(ff.loadFile(path), "not a readable DICOM file");
        DSRDocument doc;
        check(doc.read(*ff.getDataset()), "not a readable SR document");
        std::string o;
        OFString v;
        auto field = [&](const std::string &s) { o += "\t" + s; };
        doc.getStudyInstanceUID(v); o += "study"; field(v.c_str()); o += "\n";
        doc.getSeriesInstanceUID(v); o += "series"; field(v.c_str()); o += "\n";
        doc.getSOPClassUID(v); o += "sopclass"; field(v.c_str()); o += "\n";
        doc.getSOPInstanceUID(v); o += "sop"; field(v.c_str()); o += "\n";
        DSRDocumentTree &t = doc.getTree();
        if (t.gotoRoot()) {
            do {
                const DSRContentItem &item = t.getCurrentContentItem();
                const std::string concept = item.getConceptName().getCodeValue().c_str();
                switch (item.getValueType()) {
                    case DSRTypes::VT_Container: o += "container"; field(concept); break;
                    case DSRTypes::VT_Num:
                        o += "num"; field(concept); field(item.getNumericValue().getNumericValue().c_str());
                        field(item.getNumericValue().getMeasurementUnit().getCodeValue().c_str());
                        break;
                    case DSRTypes::VT_Code: o += "code"; field(concept); field(item.getCodeValue().getCodeValue().c_str()); break;
                    case DSRTypes::VT_Text: o += "text"; field(concept); field(item.getStringValue().c_str()); break;
                    case DSRTypes::VT_UIDRef: o += "uidref"; field(concept); field(item.getStringValue().c_str()); break;
                    case DSRTypes::VT_Image: {
                        const DSRImageReferenceValue &r = item.getImageReference();
                        Sint32 frame = 0;
                        if (!r.getFrameList().isEmpty()) frame = r.getFrameList().getItem(1);
                        o += "image"; field(concept); field(r.getSOPClassUID().c_str()); field(r.getSOPInstanceUID().c_str());
                        field(std::to_string(frame));
                        break;
                    }
                    default: o += "other"; field(concept); break;
                }
                o += "\n";
            } while (t.iterate());
        }
        DSRSOPInstanceReferenceList &ev = doc.getCurrentRequestedProcedureEvidence();
        if (ev.gotoFirstItem().good()) {
            do {
                OFString a, b, c, d;
                o += "evidence"; field(ev.getStudyInstanceUID(a).c_str()); field(ev.getSeriesInstanceUID(b).c_str());
                field(ev.getSOPClassUID(c).c_str()); field(ev.getSOPInstanceUID(d).c_str()); o += "\n";
            } while (ev.gotoNextItem().good());
        }
        char *buf = (char *)std::malloc(o.size() + 1);
        if (!buf) throw std::bad_alloc();
        std::memcpy(buf, o.c_str(), o.size() + 1);
        *textOut = buf;
    });
}

extern "C" void dt_free(void *p) { std::free(p); }

extern "C" int dt_sha256_file(const char *path, char *hex, char *err, int errlen) {
    return guarded(err, errlen, [&] {
        FILE *f = std::fopen(path, "rb");
        if (!f) refuse(std::string("cannot open (") + std::strerror(errno) + ")");
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1;
        std::vector<unsigned char> buf(1 << 16);
        size_t got;
        while (ok && (got = std::fread(buf.data(), 1, buf.size(), f)) > 0) ok = EVP_DigestUpdate(ctx, buf.data(), got) == 1;
        ok = ok && !std::ferror(f);
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        ok = ok && EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32;
        EVP_MD_CTX_free(ctx);
        std::fclose(f);
        if (!ok) refuse("cannot read it to hash it");
        for (unsigned int i = 0; i < len; ++i) std::snprintf(hex + 2 * i, 3, "%02x", md[i]);
    });
}
