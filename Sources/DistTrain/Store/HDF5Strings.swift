import CHDF5
import Foundation

// HDF5File's attributes (numbers and strings, on the root group or a named
// object) and its datasets of strings: both go through HDF5's variable-length
// UTF-8 string type. Every failure throws an error that names the file and the object.

// MARK: attributes (on the root group or on a named object)

extension HDF5File {
    public func setAttribute(_ key: String, _ value: String, on object: String = "/") throws {
        let t = variableStringType(H5T_CSET_UTF8)
        defer { H5Tclose(t) }
        try createAttribute(key, on: object, type: t) { a in
            value.withCString { cs in
                var p: UnsafePointer<CChar>? = cs
                return H5Awrite(a, t, &p)
            }
        }
    }

    public func setAttribute(_ key: String, _ value: Double, on object: String = "/") throws {
        try createAttribute(key, on: object, type: disttrain_h5t_native_double()) { a in
            var v = value
            return H5Awrite(a, disttrain_h5t_native_double(), &v)
        }
    }

    public func stringAttribute(_ key: String, on object: String = "/") throws -> String? {
        try openAttribute(key, on: object) { a in
            let ft = H5Aget_type(a)
            defer { H5Tclose(ft) }
            guard H5Tget_class(ft) == H5T_STRING else { return nil }
            if H5Tis_variable_str(ft) > 0 {
                let mt = variableStringType(H5Tget_cset(ft))  // HDF5 converts no character sets
                defer { H5Tclose(mt) }
                var p: UnsafeMutablePointer<CChar>? = nil
                if H5Aread(a, mt, &p) < 0 { throw HDF5Error("\(path): cannot read attribute '\(key)'") }
                defer { free(p) }
                return p.map { String(cString: $0) }
            }
            var buf = [CChar](repeating: 0, count: H5Tget_size(ft) + 1)
            if H5Aread(a, ft, &buf) < 0 { throw HDF5Error("\(path): cannot read attribute '\(key)'") }
            return String(cString: buf)
        }
    }

    public func doubleAttribute(_ key: String, on object: String = "/") throws -> Double? {
        try openAttribute(key, on: object) { a in
            var v = 0.0
            if H5Aread(a, disttrain_h5t_native_double(), &v) < 0 { throw HDF5Error("\(path): cannot read attribute '\(key)'") }
            return v
        }
    }

    /// A variable-length C string type in `cset` (the caller closes it).
    func variableStringType(_ cset: H5T_cset_t) -> hid_t {
        let t = H5Tcopy(disttrain_h5t_c_s1())
        H5Tset_size(t, disttrain_h5t_variable())
        H5Tset_cset(t, cset)
        return t
    }

    /// `body` with `object` open.
    private func withObject<T>(_ object: String, _ body: (hid_t) throws -> T) throws -> T {
        let obj = H5Oopen(id, object, disttrain_h5p_default())
        if obj < 0 { throw HDF5Error("\(path) has no object '\(object)'") }
        defer { H5Oclose(obj) }
        return try body(obj)
    }

    /// Replaces attribute `key` of `object` by a scalar of `type`; `write` fills it (HDF5 status).
    private func createAttribute(_ key: String, on object: String, type: hid_t, _ write: (hid_t) throws -> herr_t) throws {
        try withObject(object) { obj in
            if H5Aexists(obj, key) > 0 { H5Adelete(obj, key) }
            let space = H5Screate(H5S_SCALAR)
            defer { H5Sclose(space) }
            let a = H5Acreate2(obj, key, type, space, disttrain_h5p_default(), disttrain_h5p_default())
            if a < 0 { throw HDF5Error("\(path): cannot create attribute '\(key)'") }
            defer { H5Aclose(a) }
            if try write(a) < 0 { throw HDF5Error("\(path): cannot write attribute '\(key)'") }
        }
    }

    /// `read` with attribute `key` of `object` open; nil when it does not exist.
    private func openAttribute<T>(_ key: String, on object: String, _ read: (hid_t) throws -> T?) throws -> T? {
        try withObject(object) { obj in
            guard H5Aexists(obj, key) > 0 else { return nil }
            let a = H5Aopen(obj, key, disttrain_h5p_default())
            defer { H5Aclose(a) }
            return try read(a)
        }
    }
}

// MARK: string datasets

extension HDF5File {
    /// A 1-D dataset of variable-length UTF-8 strings.
    public func writeStrings(_ name: String, _ values: [String]) throws {
        try ensureParents(name)
        let t = variableStringType(H5T_CSET_UTF8)
        defer { H5Tclose(t) }
        var dims = [hsize_t(values.count)]
        let space = H5Screate_simple(1, &dims, nil)
        defer { H5Sclose(space) }
        if exists(name) { H5Ldelete(id, name, disttrain_h5p_default()) }
        let d = H5Dcreate2(id, name, t, space, disttrain_h5p_default(), disttrain_h5p_default(), disttrain_h5p_default())
        if d < 0 { throw HDF5Error("\(path): cannot create dataset '\(name)'") }
        defer { H5Dclose(d) }
        let cstrings = values.map { strdup($0) }
        defer { cstrings.forEach { free($0) } }
        var ptrs = cstrings.map { UnsafePointer($0) }
        if H5Dwrite(d, t, disttrain_h5s_all(), disttrain_h5s_all(), disttrain_h5p_default(), &ptrs) < 0 {
            throw HDF5Error("\(path): cannot write dataset '\(name)'")
        }
    }

    public func readStrings(_ name: String) throws -> [String] {
        let d = try openDataset(name)
        defer { H5Dclose(d) }
        let n = try elementCount(dims(d), name)
        let ft = H5Dget_type(d)
        defer { H5Tclose(ft) }
        let t = variableStringType(H5Tget_cset(ft))
        defer { H5Tclose(t) }
        var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: n)
        if H5Dread(d, t, disttrain_h5s_all(), disttrain_h5s_all(), disttrain_h5p_default(), &ptrs) < 0 {
            throw HDF5Error("\(path): cannot read strings '\(name)'")
        }
        defer { ptrs.forEach { free($0) } }
        return ptrs.map { $0.map { String(cString: $0) } ?? "" }
    }
}
