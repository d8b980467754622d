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
        var probe = ImageProbe(status: .ok, sha256: Hashing.sha256(bytes), byteSize: bytes.count,
                               width: expected?.width, height: expected?.height)
        let header: ImageHeader
        do {
            header = try ImageHeader.read(bytes, name: name)
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
        } else if let expected, expected.width != header.width || expected.height != header.height {
            probe.status = .sizeMismatch
            probe.error = "header says \(header.width)x\(header.height), annotation says \(expected.width)x\(expected.height)"
        }
        return probe
    }

    /// Reads and probes a file; a file that is not there is `missing`.
    static func probe(file path: String, name: String, expected: (width: Int, height: Int)?) -> ImageProbe {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            return exists
                ? ImageProbe(status: .corrupt, width: expected?.width, height: expected?.height, error: "cannot read \(path)")
                : .missing("no file at \(path)", width: expected?.width, height: expected?.height)
        }
        return probe([UInt8](data), name: name, expected: expected)
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
/// each batch of results to `commit` (which writes one transaction).
enum ImageScanner {
    static func scan(_ pending: [PendingImage], source: ImageSource, progress: any ProgressSink,
                     problems: inout [String],
                     commit: ([(PendingImage, ImageProbe, String?, String?)]) throws -> Void) throws {
        switch source {
        case .none:
            let results = pending.map { image in
                (image, ImageProbe.missing("no --images given", width: image.expected?.width, height: image.expected?.height),
                 String?.none, String?.none)
            }
            for chunk in stride(from: 0, to: results.count, by: 2000) {
                try commit(Array(results[chunk..<min(chunk + 2000, results.count)]))
                progress.advance(by: min(2000, results.count - chunk))
            }
        case .folder(let root):
            let batchSize = 256
            for start in stride(from: 0, to: pending.count, by: batchSize) {
                let batch = Array(pending[start..<min(start + batchSize, pending.count)])
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
                try commit(batch.enumerated().map { i, image in
                    (image, probes[i], root + "/" + image.fileName, String?.none)
                })
                progress.advance(by: batch.count)
            }
        case .archive(let archivePath):
            // Match members by full name, else by base name (COCO zips hold "train2017/000000000139.jpg").
            var byName: [String: Int] = [:]
            var byBase: [String: Int] = [:]
            for (i, image) in pending.enumerated() {
                byName[image.fileName] = i
                byBase[(image.fileName as NSString).lastPathComponent] = i
            }
            var found = Set<Int>()
            var batch: [(PendingImage, ImageProbe, String?, String?)] = []
            let reader = try ArchiveReader(path: archivePath)
            try reader.forEachEntry { entry in
                guard entry.isRegularFile else { return .skip }
                guard entry.isSafe else {
                    problems.append("\(archivePath): member '\(entry.name)': unsafe name (absolute or with '..'): skipped, never written or followed")
                    return .skip
                }
                guard let i = byName[entry.name] ?? byBase[(entry.name as NSString).lastPathComponent], !found.contains(i) else {
                    return .skip
                }
                found.insert(i)
                let image = pending[i]
                let probe: ImageProbe
                do {
                    probe = ImageProbe.probe(try entry.readAll(limit: 1 << 30), name: entry.name, expected: image.expected)
                } catch let error as VLMError {
                    probe = ImageProbe(status: .corrupt, width: image.expected?.width, height: image.expected?.height, error: error.message)
                }
                batch.append((image, probe, archivePath, entry.name))
                if batch.count >= 256 {
                    try commit(batch)
                    progress.advance(by: batch.count)
                    batch.removeAll(keepingCapacity: true)
                }
                return .continue
            }
            for (i, image) in pending.enumerated() where !found.contains(i) {
                batch.append((image, .missing("not in archive \(archivePath)", width: image.expected?.width, height: image.expected?.height),
                              archivePath, nil))
            }
            try commit(batch)
            progress.advance(by: batch.count)
        }
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
