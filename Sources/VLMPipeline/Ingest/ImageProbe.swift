import Foundation
import VLMCore
import VLMIO

/// The checks ingest makes on one image's bytes: format and size from the header, the sha256 of the bytes,
/// and a status with a readable error.
struct ImageProbe: Sendable {
    var status: ImageStatus
    var sha256: String?
    var byteSize: Int?
    var width: Int?
    var height: Int?
    var format: String?
    var error: String?

    static func missing(_ message: String, width: Int?, height: Int?) -> ImageProbe {
        ImageProbe(status: .missing, width: width, height: height, error: message)
    }

    /// Probes `bytes`; `expected` is the annotation's (width, height) when it gives one.
    static func probe(_ bytes: [UInt8], name: String, expected: (width: Int, height: Int)?) -> ImageProbe {
        var stream = Stream()
        bytes.withUnsafeBytes { stream.update($0) }
        return stream.finish(name: name, expected: expected)
    }

    /// Probes an image fed in blocks, holding at most its first `headerWindow` bytes and its last 4 KiB:
    /// memory does not grow with the image.
    struct Stream {
        /// The header (JPEG SOF, PNG IHDR) must lie in this many leading bytes.
        static let headerWindow = 4 << 20
        static let tailWindow = 4096
        private var hasher = StreamingSHA256()
        private(set) var byteCount = 0
        private var head: [UInt8] = []
        private var tail: [UInt8] = []

        mutating func update(_ block: UnsafeRawBufferPointer) {
            hasher.update(block)
            byteCount += block.count
            if head.count < Self.headerWindow {
                head.append(contentsOf: block.prefix(Self.headerWindow - head.count))
            }
            if block.count >= Self.tailWindow {
                tail = Array(block.suffix(Self.tailWindow))
            } else {
                tail.append(contentsOf: block)
                if tail.count > Self.tailWindow { tail.removeFirst(tail.count - Self.tailWindow) }
            }
        }

        func finish(name: String, expected: (width: Int, height: Int)?) -> ImageProbe {
            ImageProbe.check(head: head, tail: tail, sha256: hasher.finalize(), byteSize: byteCount, name: name, expected: expected)
        }
    }

    /// Judges an image from its leading bytes (the header) and its last bytes (the end marker).
    private static func check(head: [UInt8], tail: [UInt8], sha256: String, byteSize: Int, name: String,
                              expected: (width: Int, height: Int)?) -> ImageProbe {
        var probe = ImageProbe(status: .ok, sha256: sha256, byteSize: byteSize,
                               width: expected?.width, height: expected?.height)
        let header: ImageHeader
        do {
            header = try ImageHeader.read(head, name: name)
        } catch let error as VLMError {
            probe.status = .corrupt
            probe.error = error.message
            return probe
        } catch {
            probe.status = .corrupt
            probe.error = "\(error)"
            return probe
        }
        probe.width = header.width
        probe.height = header.height
        probe.format = header.format.rawValue
        let pixels = PixelLimit.pixels(width: header.width, height: header.height)
        if pixels > PixelLimit.error {
            probe.status = .tooLarge
            probe.error = "\(header.width)x\(header.height) = \(pixels) pixels is over the decompression-bomb limit of \(PixelLimit.error) (PIL refuses it)"
        } else if let missing = Self.missingEnd(format: header.format, tail: tail) {
            probe.status = .corrupt
            probe.error = "truncated: \(missing) in its last \(Stream.tailWindow) bytes (\(byteSize) bytes in all)"
        } else if let expected, expected.width != header.width || expected.height != header.height {
            probe.status = .sizeMismatch
            probe.error = "header says \(header.width)x\(header.height), annotation says \(expected.width)x\(expected.height)"
        }
        return probe
    }

    /// A JPEG must end with its EOI marker (FF D9) and a PNG with its IEND chunk; trailing bytes after them
    /// are allowed within the tail window. Returns what is missing, or nil.
    private static func missingEnd(format: ImageHeader.Format, tail: [UInt8]) -> String? {
        func contains(_ needle: [UInt8]) -> Bool {
            guard tail.count >= needle.count else { return false }
            for i in 0...(tail.count - needle.count) where tail[i] == needle[0] && Array(tail[i..<i + needle.count]) == needle {
                return true
            }
            return false
        }
        switch format {
        case .jpeg: return contains([0xFF, 0xD9]) ? nil : "no JPEG end-of-image marker (FF D9)"
        case .png: return contains(Array("IEND".utf8)) ? nil : "no PNG IEND chunk"
        default: return nil
        }
    }

    /// Reads and probes a file in 1 MiB blocks; a file that is not there is `missing`.
    static func probe(file path: String, name: String, expected: (width: Int, height: Int)?) -> ImageProbe {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let exists = FileManager.default.fileExists(atPath: path)
            return exists
                ? ImageProbe(status: .corrupt, width: expected?.width, height: expected?.height, error: "cannot read \(path): \(String(cString: strerror(errno)))")
                : .missing("no file at \(path)", width: expected?.width, height: expected?.height)
        }
        defer { close(fd) }
        var stream = Stream()
        // A block the size of the file (up to 1 MiB), left uninitialized: zeroing 1 MiB for every small image was
        // a large share of ingest's CPU on a folder of thumbnails.
        var st = stat()
        let size = fstat(fd, &st) == 0 ? Int(st.st_size) : 1 << 20
        let blockSize = max(4096, min(size + 1, 1 << 20))
        var block = [UInt8](unsafeUninitializedCapacity: blockSize) { _, count in count = blockSize }
        while true {
            let n = block.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                return ImageProbe(status: .corrupt, width: expected?.width, height: expected?.height, error: "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            block.withUnsafeBytes { stream.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return stream.finish(name: name, expected: expected)
    }

    /// The same bytes judged against another annotation's size (two images naming one member).
    static func recheck(_ probe: ImageProbe, expected: (width: Int, height: Int)?) -> ImageProbe {
        var probe = probe
        guard let expected, probe.status == .ok || probe.status == .sizeMismatch, let w = probe.width, let h = probe.height,
              probe.format != nil else { return probe }
        if expected.width != w || expected.height != h {
            probe.status = .sizeMismatch
            probe.error = "header says \(w)x\(h), annotation says \(expected.width)x\(expected.height)"
        } else {
            probe.status = .ok
            probe.error = nil
        }
        return probe
    }

    /// One line for the report: "FILE: STATUS: reason".
    func problem(fileName: String) -> String? {
        status == .ok ? nil : "\(fileName): \(status.rawValue): \(error ?? "")"
    }
}

/// Where ingest finds images: a folder, a zip/tar read through libarchive, or nowhere (all missing).
enum ImageSource {
    case folder(String)
    case archive(String)
    case none

    init(_ path: String?) throws {
        guard let path else { self = .none; return }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw VLMError(.notFound, file: path, "image folder or archive does not exist")
        }
        if isDir.boolValue {
            self = .folder(URL(fileURLWithPath: path).standardizedFileURL.path)
        } else if ArchiveReader.isArchive(path: path) {
            self = .archive(URL(fileURLWithPath: path).standardizedFileURL.path)
        } else {
            throw VLMError(.badInput, file: path, "--images must be a folder, a .zip or a .tar(.gz)")
        }
    }

    var location: String? {
        switch self {
        case .folder(let p), .archive(let p): p
        case .none: nil
        }
    }
}

/// An image named by an annotation file, waiting to be probed.
struct PendingImage: Sendable {
    var externalID: Int64?
    var fileName: String
    var key: String
    var expected: (width: Int, height: Int)?
}

/// Probes pending images from a folder in parallel (all cores), or from an archive in one pass, and hands
/// each batch of results to `commit` (which writes one transaction). Every image that is not `ok` adds one
/// line to `problems` ("FILE: STATUS: reason").
enum ImageScanner {
    typealias Scanned = (PendingImage, ImageProbe, String?, String?)

    static func scan(_ pending: [PendingImage], source: ImageSource, progress: any ProgressSink,
                     problems: inout [String], limits: ArchiveReader.Limits = ArchiveReader.Limits(),
                     commit: ([Scanned]) throws -> Void) throws {
        try scan(count: pending.count, pendingAt: { pending[$0] }, source: source, progress: progress, problems: &problems,
                 limits: limits, commit: commit)
    }

    /// As above, with the pending images made on demand (`pendingAt(0..<count)`), a batch at a time, so that a
    /// folder or no images at all never holds them all. An archive's one pass matches members against every
    /// pending name, so it makes them all first.
    static func scan(count: Int, pendingAt: (Int) -> PendingImage, source: ImageSource, progress: any ProgressSink,
                     problems: inout [String], limits: ArchiveReader.Limits = ArchiveReader.Limits(),
                     commit: ([Scanned]) throws -> Void) throws {
        var problemLines: [String] = []
        func commitReporting(_ batch: [Scanned]) throws {
            try commit(batch)
            for (image, probe, _, _) in batch {
                if let line = probe.problem(fileName: image.fileName) { problemLines.append(line) }
            }
        }
        defer { problems.append(contentsOf: problemLines) }
        switch source {
        case .none:
            for chunk in stride(from: 0, to: count, by: 2000) {
                try commit((chunk..<min(chunk + 2000, count)).map { i in
                    let image = pendingAt(i)
                    return (image, ImageProbe.missing("no --images given", width: image.expected?.width, height: image.expected?.height),
                            String?.none, String?.none)
                })
                progress.advance(by: min(2000, count - chunk))
            }
            if count > 0 {
                problemLines.append("\(count) images recorded as missing: no --images given")
            }
        case .folder(let root):
            let batchSize = 256
            for start in stride(from: 0, to: count, by: batchSize) {
                let batch = (start..<min(start + batchSize, count)).map(pendingAt)
                let probes = UnsafeSendableArray<ImageProbe>(count: batch.count)
                DispatchQueue.concurrentPerform(iterations: batch.count) { i in
                    let image = batch[i]
                    let probe: ImageProbe
                    if !ArchiveReader.isSafeMemberName(image.fileName) {
                        probe = ImageProbe(status: .missing, width: image.expected?.width, height: image.expected?.height,
                                           error: "unsafe file name '\(image.fileName)' (absolute or with '..'): not followed")
                    } else {
                        probe = ImageProbe.probe(file: root + "/" + image.fileName, name: image.fileName, expected: image.expected)
                    }
                    probes[i] = probe
                }
                try commitReporting(batch.enumerated().map { i, image in
                    (image, probes[i], root + "/" + image.fileName, String?.none)
                })
                progress.advance(by: batch.count)
            }
        case .archive(let archivePath):
            var memberProblems: [String] = []
            defer { problemLines.append(contentsOf: memberProblems) }
            try scanArchive((0..<count).map(pendingAt), archivePath: archivePath, limits: limits, progress: progress, problems: &memberProblems,
                            commit: commitReporting)
        }
    }

    /// One pass over an archive. A member matches an image by its full name (committed at once), or by ending
    /// in "/" + the image's name (COCO zips hold "train2017/000000000139.jpg"; held to the end, since a full-name
    /// match later in the archive wins and a second such member makes the match ambiguous). Links match too,
    /// and are recorded as links, never followed.
    private static func scanArchive(_ pending: [PendingImage], archivePath: String, limits: ArchiveReader.Limits,
                                    progress: any ProgressSink, problems: inout [String],
                                    commit: ([Scanned]) throws -> Void) throws {
        var byName: [String: [Int]] = [:]
        for (i, image) in pending.enumerated() where ArchiveReader.isSafeMemberName(image.fileName) {
            byName[image.fileName, default: []].append(i)
        }
        /// Priority of a held match: 2 a file by suffix, 1 a link; an exact file match is committed at once.
        var held: [Int: (priority: Int, probe: ImageProbe, member: String)] = [:]
        var ambiguous: [Int: [String]] = [:]
        var exact = Set<Int>()
        var batch: [Scanned] = []
        func flushIfFull() throws {
            if batch.count >= 256 {
                try commit(batch)
                progress.advance(by: batch.count)
                batch.removeAll(keepingCapacity: true)
            }
        }
        func probeMember(_ entry: ArchiveReader.Entry, expected: (width: Int, height: Int)?) -> ImageProbe {
            switch entry.kind {
            case .symbolicLink(let target):
                return ImageProbe(status: .missing, width: expected?.width, height: expected?.height,
                                  error: "member is a symbolic link to '\(target)' (links in archives are not followed)")
            case .hardLink(let target):
                return ImageProbe(status: .missing, width: expected?.width, height: expected?.height,
                                  error: "member is a hard link to '\(target)' (links in archives are not followed)")
            default:
                var stream = ImageProbe.Stream()
                do {
                    try entry.stream(limits: limits) { stream.update($0) }
                } catch let error as ArchiveReader.LimitExceeded {
                    return ImageProbe(status: .tooLarge, byteSize: stream.byteCount, width: expected?.width, height: expected?.height,
                                      error: error.message)
                } catch let error as VLMError {
                    return ImageProbe(status: .corrupt, width: expected?.width, height: expected?.height, error: error.message)
                } catch {
                    return ImageProbe(status: .corrupt, width: expected?.width, height: expected?.height, error: "\(error)")
                }
                return stream.finish(name: entry.name, expected: expected)
            }
        }

        let reader = try ArchiveReader(path: archivePath)
        try reader.forEachEntry { entry in
            switch entry.kind {
            case .file, .symbolicLink, .hardLink: break
            default: return .skip
            }
            guard entry.isSafe else {
                problems.append("\(archivePath): member '\(entry.name)': unsafe name (absolute or with '..'): skipped, never written or followed")
                return .skip
            }
            let isLink = entry.kind != .file
            if let indices = byName[entry.name], !isLink {
                let todo = indices.filter { !exact.contains($0) }
                guard let first = todo.first else { return .skip }
                let probe = probeMember(entry, expected: pending[first].expected)
                for i in todo {
                    exact.insert(i)
                    held[i] = nil
                    var p = probe
                    if i != first {
                        p = ImageProbe.recheck(probe, expected: pending[i].expected)
                    }
                    batch.append((pending[i], p, archivePath, entry.name))
                }
                try flushIfFull()
                return .continue
            }
            // Suffix matches: every proper suffix of the member name that starts after a "/".
            var candidates: [Int] = []
            if let indices = byName[entry.name] { candidates += indices }  // a link with the full name
            var rest = Substring(entry.name)
            while let slash = rest.firstIndex(of: "/") {
                rest = rest[rest.index(after: slash)...]
                if let indices = byName[String(rest)] { candidates += indices }
            }
            candidates = candidates.filter { !exact.contains($0) }
            guard !candidates.isEmpty else { return .skip }
            let priority = isLink ? 1 : 2
            var probe: ImageProbe?
            for i in candidates {
                if let current = held[i] {
                    if current.priority > priority { continue }
                    if current.priority == priority {
                        ambiguous[i, default: [current.member]].append(entry.name)
                        continue
                    }
                }
                if probe == nil { probe = probeMember(entry, expected: pending[i].expected) }
                held[i] = (priority, ImageProbe.recheck(probe!, expected: pending[i].expected), entry.name)
            }
            return .continue
        }
        for (i, image) in pending.enumerated() where !exact.contains(i) {
            if let members = ambiguous[i] {
                let list = members.map { "'\($0)'" }.joined(separator: ", ")
                batch.append((image, .missing("ambiguous: members \(list) all end in '\(image.fileName)'; name one by its full path",
                                              width: image.expected?.width, height: image.expected?.height), archivePath, nil))
            } else if let match = held[i] {
                batch.append((image, match.probe, archivePath, match.member))
            } else if !ArchiveReader.isSafeMemberName(image.fileName) {
                batch.append((image, .missing("unsafe file name '\(image.fileName)' (absolute or with '..'): not followed",
                                              width: image.expected?.width, height: image.expected?.height), archivePath, nil))
            } else {
                batch.append((image, .missing("not in archive \(archivePath)", width: image.expected?.width, height: image.expected?.height),
                              archivePath, nil))
            }
            try flushIfFull()
        }
        try commit(batch)
        progress.advance(by: batch.count)
    }
}

/// A fixed-size array written from `concurrentPerform` iterations, each index by exactly one iteration.
final class UnsafeSendableArray<T>: @unchecked Sendable {
    private var storage: [T?]
    private let lock = NSLock()

    init(count: Int) { storage = Array(repeating: nil, count: count) }

    subscript(index: Int) -> T {
        get { lock.withLock { storage[index]! } }
        set { lock.withLock { storage[index] = newValue } }
    }
}
