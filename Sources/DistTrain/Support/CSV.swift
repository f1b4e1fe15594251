import Foundation

/// RFC 4180 CSV, the dialect pandas and Python's csv module write and read:
/// fields separated by commas, records by LF or CRLF; a field holding a comma,
/// a quote, CR or LF is quoted and its quotes doubled. Every CSV disttrain
/// writes goes through `row`, every one it reads through `parse`, so a file
/// name with a comma, quote or newline is one field and never injects a row.
enum CSV {
    /// One field, quoted when it must be.
    static func field(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// One record, with its line ending.
    static func row(_ fields: [String]) -> String { fields.map(field).joined(separator: ",") + "\n" }

    /// A parsed record: its fields and the line it starts on (1-based), for messages.
    struct Record {
        var fields: [String]
        var line: Int
    }

    /// The records of `text`; blank lines are skipped. Throws, naming `path`
    /// and the line, on a quote that is never closed or text after a closing quote.
    static func parse(_ text: String, path: String) throws -> [Record] {
        var out: [Record] = [], fields: [String] = [], field = ""
        var line = 1, start = 1, quoted = false, wasQuoted = false, afterQuote = false
        var it = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        func endRecord() {
            fields.append(field)
            if !(fields.count == 1 && fields[0].isEmpty && !wasQuoted) { out.append(Record(fields: fields, line: start)) }
            fields = []; field = ""; wasQuoted = false; afterQuote = false
        }
        var scalars = String.UnicodeScalarView()
        func flush() { field += String(scalars); scalars.removeAll() }
        while let c = pending ?? it.next() {
            pending = nil
            if quoted {
                if c == "\"" {
                    if let n = it.next() {
                        if n == "\"" { scalars.append("\""); continue }
                        pending = n
                    }
                    quoted = false; afterQuote = true
                } else {
                    if c == "\n" { line += 1 }
                    scalars.append(c)
                }
                continue
            }
            switch c {
            case ",":
                flush(); fields.append(field); field = ""; wasQuoted = false; afterQuote = false
            case "\r", "\n":
                if c == "\r", let n = it.next(), n != "\n" { pending = n }
                flush(); endRecord(); line += 1; start = line
            case "\"" where field.isEmpty && scalars.allSatisfy({ $0 == " " || $0 == "\t" }) && !afterQuote:
                // Spaces before an opening quote (`a, "b"`, as people write CSVs by hand) are not part of the field.
                scalars.removeAll()
                quoted = true; wasQuoted = true
            case " " where afterQuote, "\t" where afterQuote:
                continue
            default:
                if afterQuote { throw RuntimeError("\(path) line \(line): text after a closing quote") }
                if c == "\"" { throw RuntimeError("\(path) line \(line): a quote inside an unquoted field (quote the field and double the quote)") }
                scalars.append(c)
            }
        }
        if quoted { throw RuntimeError("\(path) line \(start): a quoted field is never closed") }
        flush()
        if !fields.isEmpty || !field.isEmpty || wasQuoted { endRecord() }
        return out
    }

    /// `parse` of a file, with "cannot read" naming it; only a regular file is opened.
    static func read(_ path: String) throws -> [Record] {
        if let problem = DatasetSource.regularFileProblem(path) { throw RuntimeError(problem) }  // a FIFO would block for ever
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw RuntimeError("cannot read '\(path)' (missing, unreadable or not UTF-8)") }
        return try parse(text, path: path)
    }
}
