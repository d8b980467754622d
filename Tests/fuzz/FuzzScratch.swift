// Shared by the JSON fuzz targets: the input goes to a file in a per-process scratch directory (the readers under
// test read files), is read with one of several block sizes (so values straddle block boundaries), with ingest's
// record limits or small ones (so the rejection paths run), and every error must be a VLMError naming the file.
import Foundation
import VLMCore
import VLMIO

enum FuzzScratch {
    static let directory: String = {
        let dir = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/vlmdata-fuzz-\(getpid())"
        mkdir(dir, 0o700)
        return dir
    }()

    static func file(_ name: String) -> String { directory + "/" + name }

    static func write(_ data: UnsafePointer<UInt8>, _ size: Int, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0, "cannot write \(path)")
        var done = 0
        while done < size {
            let n = Foundation.write(fd, data + done, size - done)
            precondition(n > 0, "short write to \(path)")
            done += n
        }
        close(fd)
    }

    /// Opens `path` with a block size and limits chosen from `size`, runs `body`, and accepts only VLMErrors
    /// that name the file.
    static func walk(_ path: String, size: Int, skip: Set<String> = [], _ body: (JSONStreamReader) throws -> Void) {
        let blockSizes = [1 << 20, 7, 64, 4096]
        do {
            let reader = try JSONStreamReader(path: path, blockSize: blockSizes[size % blockSizes.count])
            reader.elementSkipKeys = skip
            if size % 2 == 0 {   // ingest's limits (IngestLimits)
                reader.maxStringBytes = 64 << 10
                reader.maxDepth = 64
                reader.maxElementBytes = 4 << 20
            } else {             // small ones, so that records in small inputs hit them
                reader.maxStringBytes = 40
                reader.maxDepth = 4
                reader.maxElementBytes = 300
                reader.maxLineBytes = 500
            }
            try body(reader)
        } catch let error as VLMError {
            check(error, path)
        } catch {
            preconditionFailure("\(path): an error that is not a VLMError: \(error)")
        }
    }

    /// Runs one record's checks: a VLMError rejects the record; anything else is a bug.
    static func record(_ path: String, _ index: Int, _ body: () throws -> Void) {
        do { try body() } catch let error as VLMError {
            _ = error.description
        } catch {
            preconditionFailure("\(path) record \(index): an error that is not a VLMError: \(error)")
        }
    }

    static func rejected(_ path: String) -> (VLMError, Int) throws -> Void {
        { error, index in
            precondition(index >= 0, "rejected record with index \(index)")
            check(error, path)
        }
    }

    static func check(_ error: VLMError, _ path: String) {
        precondition(error.description.contains(path), "error does not name the file: \(error.description)")
    }
}
