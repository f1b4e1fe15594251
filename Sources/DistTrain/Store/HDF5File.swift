import CHDF5
import Foundation

// A small checked wrapper over the HDF5 C API: files, groups, float/int
// datasets (optionally chunked with Fletcher32), image rows. Attributes and
// string datasets are in HDF5Strings.swift. Every failure throws an error that
// names the file and the object.

public struct HDF5Error: Error, CustomStringConvertible {
    public let description: String
    init(_ s: String) { description = s }
}

public final class HDF5File {
    public let path: String
    let id: hid_t

    /// `createInMemory`: HDF5's core driver, nothing touches the disk until
    /// `image()` is written by the caller (durableHDF5), with every write checked.
    public enum Mode { case read, readWrite, create, createInMemory }

    public init(_ path: String, _ mode: Mode = .read) throws {
        disttrain_h5_silence_errors()
        self.path = path
        switch mode {
        case .read:
            guard FileManager.default.fileExists(atPath: path) else { throw HDF5Error("no such file '\(path)'") }
            id = H5Fopen(path, disttrain_h5f_acc_rdonly(), disttrain_h5p_default())
        case .readWrite:
            id = H5Fopen(path, disttrain_h5f_acc_rdwr(), disttrain_h5p_default())
        case .create:
            id = H5Fcreate(path, disttrain_h5f_acc_trunc(), disttrain_h5p_default(), disttrain_h5p_default())
        case .createInMemory:
            let fapl = H5Pcreate(disttrain_h5p_file_access())
            defer { H5Pclose(fapl) }
            H5Pset_fapl_core(fapl, 1 << 22, false)  // grow by 4 MiB, no backing store
            id = H5Fcreate(path, disttrain_h5f_acc_trunc(), disttrain_h5p_default(), fapl)
        }
        if id < 0 { throw HDF5Error("cannot open HDF5 file '\(path)' (not HDF5, truncated or unreadable)") }
    }

    private var closed = false

    /// The bytes of a file made with `.createInMemory`, as they would lie on disk.
    public func image() throws -> Data {
        guard H5Fflush(id, H5F_SCOPE_GLOBAL) >= 0 else { throw HDF5Error("cannot flush HDF5 file '\(path)'") }
        let n = H5Fget_file_image(id, nil, 0)
        guard n > 0 else { throw HDF5Error("cannot take the image of HDF5 file '\(path)'") }
        var data = Data(count: n)
        let got = data.withUnsafeMutableBytes { H5Fget_file_image(id, $0.baseAddress, n) }
        guard got == n else { throw HDF5Error("cannot take the image of HDF5 file '\(path)'") }
        return data
    }

    /// Flushes and closes the file, checking the result (a full disk shows
    /// here); a file not closed this way is closed unchecked when released.
    public func close() throws {
        guard !closed else { return }
        closed = true
        errno = 0
        if H5Fclose(id) < 0 {
            let why = errno != 0 ? errnoText() : "HDF5 could not flush it"
            throw HDF5Error("cannot write HDF5 file '\(path)': \(why)")
        }
    }

    deinit { if !closed { H5Fclose(id) } }

    public func exists(_ name: String) -> Bool {
        // Check each path component, as H5Lexists requires.
        var prefix = ""
        for part in name.split(separator: "/") {
            prefix += (prefix.isEmpty ? "" : "/") + part
            if H5Lexists(id, prefix, disttrain_h5p_default()) <= 0 { return false }
        }
        return true
    }

    /// Creates the groups of a path ("a/b/c" creates a and a/b).
    func ensureParents(_ name: String) throws {
        let parts = name.split(separator: "/").dropLast()
        var prefix = ""
        for part in parts {
            prefix += (prefix.isEmpty ? "" : "/") + part
            if H5Lexists(id, prefix, disttrain_h5p_default()) <= 0 {
                let g = H5Gcreate2(id, prefix, disttrain_h5p_default(), disttrain_h5p_default(), disttrain_h5p_default())
                if g < 0 { throw HDF5Error("\(path): cannot create group '\(prefix)'") }
                H5Gclose(g)
            }
        }
    }

    /// Names of the members of a group ("" or "/" for the root).
    public func members(_ group: String = "/") throws -> [String] {
        let g = H5Gopen2(id, group.isEmpty ? "/" : group, disttrain_h5p_default())
        if g < 0 { throw HDF5Error("\(path) has no group '\(group)'") }
        defer { H5Gclose(g) }
        var info = H5G_info_t()
        H5Gget_info(g, &info)
        var names: [String] = []
        for i in 0..<info.nlinks {
            let n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, disttrain_h5p_default())
            var buf = [CChar](repeating: 0, count: Int(n) + 1)
            H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buf, Int(n) + 1, disttrain_h5p_default())
            names.append(String(cString: buf))
        }
        return names
    }

    public func shape(_ name: String) throws -> [Int] {
        let d = try openDataset(name)
        defer { H5Dclose(d) }
        return dims(d)
    }

    func openDataset(_ name: String) throws -> hid_t {
        guard exists(name) else { throw HDF5Error("\(path) has no dataset '\(name)'") }
        let d = H5Dopen2(id, name, disttrain_h5p_default())
        if d < 0 { throw HDF5Error("\(path): cannot open dataset '\(name)'") }
        return d
    }

    func dims(_ d: hid_t) -> [Int] {
        let s = H5Dget_space(d)
        defer { H5Sclose(s) }
        let r = Int(H5Sget_simple_extent_ndims(s))
        var dims = [hsize_t](repeating: 0, count: max(r, 1))
        H5Sget_simple_extent_dims(s, &dims, nil)
        return r == 0 ? [] : dims.map { Int(clamping: $0) }
    }

    /// Datasets larger than this are refused before anything is allocated.
    public static let maxElements = 1 << 31

    /// The product of a declared shape, checked: no negative extent, no
    /// overflow, at most `maxElements` (a tiny file may declare 2^40 x 2^40).
    func elementCount(_ shape: [Int], _ name: String) throws -> Int {
        var n = 1
        for d in shape {
            let (m, overflow) = n.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, m <= HDF5File.maxElements else {
                throw HDF5Error("\(path): dataset '\(name)' declares shape \(shape), over the limit of \(HDF5File.maxElements) elements")
            }
            n = m
        }
        return n
    }

    /// True when `name` is a dataset of integers (false for reals and anything else).
    public func isInteger(_ name: String) throws -> Bool {
        let d = try openDataset(name)
        defer { H5Dclose(d) }
        let t = H5Dget_type(d)
        defer { H5Tclose(t) }
        return H5Tget_class(t) == H5T_INTEGER
    }

    /// Any numeric dataset, converted by HDF5 to the memory type of T.
    func read<T: Numeric>(_ name: String, as memType: hid_t) throws -> (shape: [Int], values: [T]) {
        let d = try openDataset(name)
        defer { H5Dclose(d) }
        let shape = dims(d)
        var v = [T](repeating: 0, count: try elementCount(shape, name))
        let st = v.withUnsafeMutableBytes {
            H5Dread(d, memType, disttrain_h5s_all(), disttrain_h5s_all(), disttrain_h5p_default(), $0.baseAddress)
        }
        if st < 0 { throw HDF5Error("\(path): cannot read dataset '\(name)' (corrupt or checksum mismatch)") }
        return (shape, v)
    }

    public func readFloats(_ name: String) throws -> (shape: [Int], values: [Float]) { try read(name, as: disttrain_h5t_native_float()) }
    public func readInt64s(_ name: String) throws -> (shape: [Int], values: [Int64]) { try read(name, as: disttrain_h5t_native_int64()) }

    /// Writes a dataset of `memType` elements. `chunked` adds a chunk layout
    /// with Fletcher32 checksums (scalars cannot be chunked).
    func write(_ name: String, shape: [Int], memType: hid_t, fileType: hid_t, chunked: Bool,
               _ bytes: UnsafeRawPointer) throws {
        try ensureParents(name)
        var dims = shape.map { hsize_t($0) }
        let space = shape.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(shape.count), &dims, nil)
        defer { H5Sclose(space) }
        let dcpl = H5Pcreate(disttrain_h5p_dataset_create())
        defer { H5Pclose(dcpl) }
        if chunked && !shape.isEmpty && shape.reduce(1, *) > 0 {
            var chunk = dims
            H5Pset_chunk(dcpl, Int32(chunk.count), &chunk)
            H5Pset_fletcher32(dcpl)
        }
        if exists(name) { H5Ldelete(id, name, disttrain_h5p_default()) }
        let d = H5Dcreate2(id, name, fileType, space, disttrain_h5p_default(), dcpl, disttrain_h5p_default())
        if d < 0 { throw HDF5Error("\(path): cannot create dataset '\(name)'") }
        defer { H5Dclose(d) }
        if H5Dwrite(d, memType, disttrain_h5s_all(), disttrain_h5s_all(), disttrain_h5p_default(), bytes) < 0 {
            throw HDF5Error("\(path): cannot write dataset '\(name)'")
        }
    }

    public func write(_ name: String, shape: [Int], floats: [Float], chunked: Bool = true) throws {
        precondition(shape.reduce(1, *) == floats.count, "\(name): shape \(shape) for \(floats.count) values")
        try floats.withUnsafeBytes {
            try write(name, shape: shape, memType: disttrain_h5t_native_float(), fileType: disttrain_h5t_native_float(),
                      chunked: chunked, $0.baseAddress!)
        }
    }

    public func write(_ name: String, shape: [Int], int64s: [Int64], chunked: Bool = true) throws {
        precondition(shape.reduce(1, *) == int64s.count)
        try int64s.withUnsafeBytes {
            try write(name, shape: shape, memType: disttrain_h5t_native_int64(), fileType: disttrain_h5t_native_int64(),
                      chunked: chunked, $0.baseAddress!)
        }
    }
}

// MARK: float64 datasets

extension HDF5File {
    public func readDoubles(_ name: String) throws -> (shape: [Int], values: [Double]) { try read(name, as: disttrain_h5t_native_double()) }

    /// A float64 dataset, 1-D unless `shape` says otherwise.
    public func write(_ name: String, shape: [Int]? = nil, doubles: [Double]) throws {
        let shape = shape ?? [doubles.count]
        precondition(shape.reduce(1, *) == doubles.count)
        try doubles.withUnsafeBytes {
            try write(name, shape: shape, memType: disttrain_h5t_native_double(),
                      fileType: disttrain_h5t_native_double(), chunked: true, $0.baseAddress!)
        }
    }
}

// MARK: images, selections

extension HDF5File {
    /// Writes uint8 [N, C, H, W] chunked one image per chunk (so a rank reading
    /// its shard touches only its own images), with Fletcher32.
    public func writeImages(_ name: String, shape: [Int], bytes: [UInt8]) throws {
        precondition(shape.count == 4 && shape.reduce(1, *) == bytes.count)
        try ensureParents(name)
        var dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(4, &dims, nil)
        defer { H5Sclose(space) }
        let dcpl = H5Pcreate(disttrain_h5p_dataset_create())
        defer { H5Pclose(dcpl) }
        var chunk: [hsize_t] = [1, dims[1], dims[2], dims[3]]
        if shape[0] > 0 { H5Pset_chunk(dcpl, 4, &chunk); H5Pset_fletcher32(dcpl) }
        let d = H5Dcreate2(id, name, disttrain_h5t_native_uint8(), space, disttrain_h5p_default(), dcpl, disttrain_h5p_default())
        if d < 0 { throw HDF5Error("\(path): cannot create dataset '\(name)'") }
        defer { H5Dclose(d) }
        let rc = bytes.withUnsafeBytes {
            H5Dwrite(d, disttrain_h5t_native_uint8(), disttrain_h5s_all(), disttrain_h5s_all(), disttrain_h5p_default(), $0.baseAddress)
        }
        if rc < 0 { throw HDF5Error("\(path): cannot write dataset '\(name)'") }
    }

    /// Reads the rows `indices` of a uint8 [N, ...] dataset, one hyperslab
    /// per row, into a contiguous [indices.count, ...] buffer.
    public func readRows(_ name: String, indices: [Int]) throws -> (rowShape: [Int], bytes: [UInt8]) {
        let d = try openDataset(name)
        defer { H5Dclose(d) }
        let shape = dims(d)
        let rowShape = Array(shape.dropFirst())
        let rowCount = try elementCount(rowShape, name)
        guard rowCount.multipliedReportingOverflow(by: indices.count).partialValue <= HDF5File.maxElements,
              !rowCount.multipliedReportingOverflow(by: indices.count).overflow else {
            throw HDF5Error("\(path): \(indices.count) rows of '\(name)' are over the limit of \(HDF5File.maxElements) elements")
        }
        var out = [UInt8](repeating: 0, count: rowCount * indices.count)
        let fspace = H5Dget_space(d)
        defer { H5Sclose(fspace) }
        var mdims = [hsize_t(rowCount)]
        let mspace = H5Screate_simple(1, &mdims, nil)
        defer { H5Sclose(mspace) }
        var count = [hsize_t(1)] + rowShape.map { hsize_t($0) }
        for (k, i) in indices.enumerated() {
            guard i >= 0 && i < shape[0] else { throw HDF5Error("\(path): row \(i) of '\(name)' out of range 0..<\(shape[0])") }
            var start = [hsize_t(i)] + rowShape.map { _ in hsize_t(0) }
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nil, &count, nil)
            let rc = out.withUnsafeMutableBytes {
                H5Dread(d, disttrain_h5t_native_uint8(), mspace, fspace, disttrain_h5p_default(), $0.baseAddress! + k * rowCount)
            }
            if rc < 0 { throw HDF5Error("\(path): cannot read row \(i) of '\(name)' (corrupt or checksum mismatch)") }
        }
        return (rowShape, out)
    }
}
