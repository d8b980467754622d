import Foundation
import Testing
import VLMCore
@testable import VLMShard

@Suite struct NpyTests {
    @Test func headerIsPaddedToSixtyFourBytes() throws {
        for shape in [[], [0], [3], [600], [1, 576, 588], [5, 576, 588], [123_456_789_012]] as [[Int]] {
            for dtype in NpyDType.allCases {
                let header = Npy.header(dtype: dtype, shape: shape)
                #expect(header.count % 64 == 0)
                #expect(header.last == 0x0A)
                let parsed = try Npy.parseHeader(header)
                #expect(parsed == NpyHeader(dtype: dtype, shape: shape, dataOffset: header.count))
            }
        }
        let text = String(decoding: Npy.header(dtype: .int32, shape: [3]).dropFirst(10), as: UTF8.self)
        #expect(text.hasPrefix("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }"))
    }

    @Test func encodeDecodeRoundTrip() throws {
        let ids: [Int32] = [1, -200, 3, Int32.max, Int32.min, -100]
        let idBytes = Npy.encode(ids, shape: [2, 3])
        let decoded: (shape: [Int], values: [Int32]) = try Npy.decode(idBytes)
        #expect(decoded.shape == [2, 3])
        #expect(decoded.values == ids)
        let floats: [Float] = [0, -1.5, .infinity, 3.25]
        #expect(try Npy.decode(Npy.encode(floats, shape: [4])) == floats)
        let pixels: [UInt8] = (0 ..< 24).map { UInt8($0 * 10) }
        #expect(try Npy.decode(Npy.encode(pixels, shape: [1, 2, 12])) == pixels)
        // Zero-copy view of the data.
        try idBytes.withUnsafeBytes { raw in
            try Npy.withData(raw) { header, data in
                #expect(header.dtype == .int32)
                #expect(data.count == 24)
                #expect(data.loadUnaligned(fromByteOffset: 4, as: Int32.self) == -200)
            }
        }
    }

    @Test func badFilesAreRejectedWithReasons() throws {
        let good = Npy.encode([1, 2, 3] as [Int32], shape: [3])
        #expect { _ = try Npy.parseHeader(Array("hello world".utf8)) } throws: { "\($0)".contains("magic") }
        #expect { let _: [Int32] = try Npy.decode(Array(good.dropLast())) } throws: { "\($0)".contains("needs 12") }
        #expect { let _: [Float] = try Npy.decode(good) } throws: { "\($0)".contains("expected float32") }
        var fortran = good
        let text = String(decoding: fortran[10 ..< 128], as: UTF8.self).replacingOccurrences(of: "False", with: "True ")
        fortran.replaceSubrange(10 ..< 128, with: Array(text.utf8))
        #expect { _ = try Npy.parseHeader(fortran) } throws: { ($0 as? VLMError)?.kind == .unsupported }
        var bigEndian = good
        let be = String(decoding: bigEndian[10 ..< 128], as: UTF8.self).replacingOccurrences(of: "<i4", with: ">i4")
        bigEndian.replaceSubrange(10 ..< 128, with: Array(be.utf8))
        #expect { _ = try Npy.parseHeader(bigEndian) } throws: { "\($0)".contains(">i4") }
        var garbled = good
        garbled[20] = UInt8(ascii: "{")
        #expect { _ = try Npy.parseHeader(garbled) } throws: { ($0 as? VLMError)?.kind == .corrupt }
    }

    /// Found by `make fuzz` (fuzz-npy): a shape whose byte count overflows Int trapped in `NpyHeader.count`
    /// instead of being rejected. The same input is a regression seed in Tests/fuzz/regressions/.
    @Test func shapesBeyondAnyFileAreRejectedNotATrap() throws {
        for shape in ["(4294967296, 4294967296)", "(9223372036854775807, 2)", "(1, 2305843009213693952)"] {
            var text = "{'descr': '<i4', 'fortran_order': False, 'shape': \(shape), }"
            text += String(repeating: " ", count: 63 - (10 + text.utf8.count) % 64) + "\n"
            let length = text.utf8.count
            let bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(text.utf8)
            #expect { _ = try Npy.parseHeader(bytes) } throws: { "\($0)".contains("more bytes than any file holds") }
        }
    }

    @Test(.enabled(if: python != nil, "VLMDATA_PYTHON is not set"))
    func bytesEqualNumpySaveAndNumpyLoadsOurs() throws {
        let dir = try temporaryDirectory()
        let cases: [(String, NpyDType, [Int], [UInt8])] = [
            ("ids", .int32, [7], Npy.encode([1, 2, -200, 4, 5, -100, 2147483647] as [Int32], shape: [7])),
            ("pix", .uint8, [2, 3, 12], Npy.encode((0 ..< 72).map { UInt8($0 * 3 % 256) }, shape: [2, 3, 12])),
            ("f", .float32, [2, 2], Npy.encode([0.5, -1, 1e-7, 3e38] as [Float], shape: [2, 2])),
            ("empty", .int32, [0], Npy.encode([] as [Int32], shape: [0])),
            ("scalar", .float32, [], Npy.encode([2.5] as [Float], shape: [])),
            ("big", .uint8, [1, 576, 588], Npy.encode([UInt8](repeating: 9, count: 576 * 588), shape: [1, 576, 588])),
        ]
        for (name, _, _, bytes) in cases { try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/\(name).npy")) }
        // numpy loads our files with the right values, and numpy.save of the same array gives the same bytes.
        _ = try runPython("""
        import sys, numpy as np
        d = sys.argv[1]
        expect = {
            "ids": np.array([1, 2, -200, 4, 5, -100, 2147483647], dtype=np.int32),
            "pix": (np.arange(72) * 3 % 256).astype(np.uint8).reshape(2, 3, 12),
            "f": np.array([0.5, -1, 1e-7, 3e38], dtype=np.float32).reshape(2, 2),
            "empty": np.zeros(0, dtype=np.int32),
            "scalar": np.array(2.5, dtype=np.float32),
            "big": np.full((1, 576, 588), 9, dtype=np.uint8),
        }
        for name, want in expect.items():
            got = np.load(f"{d}/{name}.npy")
            assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
            assert np.array_equal(got, want), name
            np.save(f"{d}/{name}.numpy.npy", want)
        """, [dir])
        for (name, dtype, shape, bytes) in cases {
            let theirs = try readFile("\(dir)/\(name).numpy.npy")
            #expect(theirs == bytes, "\(name): numpy.save bytes differ")
            let header = try Npy.parseHeader(theirs)
            #expect(header.dtype == dtype && header.shape == shape)
        }
    }

    @Test(.enabled(if: python != nil, "VLMDATA_PYTHON is not set"))
    func readsNumpyWrittenFiles() throws {
        let dir = try temporaryDirectory()
        _ = try runPython("""
        import sys, numpy as np
        d = sys.argv[1]
        np.save(f"{d}/a.npy", np.arange(-5, 7, dtype=np.int32).reshape(3, 4))
        np.save(f"{d}/b.npy", np.linspace(0, 1, 10, dtype=np.float32))
        np.save(f"{d}/c.npy", np.arange(256, dtype=np.uint8).reshape(4, 8, 8))
        np.lib.format.write_array(open(f"{d}/v2.npy", "wb"), np.arange(3, dtype=np.int32), version=(2, 0))
        np.save(f"{d}/t.npy", np.arange(6, dtype=np.int32).reshape(2, 3).T)
        """, [dir])
        let a: (shape: [Int], values: [Int32]) = try Npy.decode(readFile(dir + "/a.npy"))
        #expect(a.shape == [3, 4] && a.values == Array(-5 ..< 7))
        let b: [Float] = try Npy.decode(readFile(dir + "/b.npy"))
        #expect(b.count == 10 && b.first == 0 && b.last == 1)
        let c: (shape: [Int], values: [UInt8]) = try Npy.decode(readFile(dir + "/c.npy"))
        #expect(c.shape == [4, 8, 8] && c.values == (0 ..< 256).map { UInt8($0) })
        let v2: [Int32] = try Npy.decode(readFile(dir + "/v2.npy"))
        #expect(v2 == [0, 1, 2])
        // numpy saves a transposed (Fortran-contiguous) view with fortran_order True: refused, not misread.
        #expect { _ = try Npy.parseHeader(readFile(dir + "/t.npy")) } throws: { ($0 as? VLMError)?.kind == .unsupported }
    }
}
