import Foundation
import Testing
import VLMCore
import VLMIO
@testable import VLMShard

/// Members covering block boundaries, empty content, long (pax) and non-ASCII names.
let sampleMembers: [(String, [UInt8])] = [
    ("k0001.json", Array(#"{"id": 1}"#.utf8)),
    ("k0001.input_ids.npy", (0 ..< 512).map { UInt8($0 % 251) }),
    ("k0001.empty", []),
    ("k0002.one", [42]),
    ("k0002.odd", (0 ..< 513).map { UInt8($0 % 13) }),
    ("dir/" + String(repeating: "long_name_", count: 15) + ".npy", (0 ..< 1000).map { UInt8($0 % 7) }),
    ("k0003.caf\u{e9}_\u{65e5}\u{672c}.txt", Array("héllo".utf8)),
    (String(repeating: "x", count: 100), [1, 2, 3]),
    // 125 bytes, but splittable into ustar prefix + name (GNU tar --format=ustar writes it that way).
    (String(repeating: "p", count: 60) + "/" + String(repeating: "q", count: 60) + ".bin", [9, 8, 7]),
]

func writeSampleTar(to path: String) throws -> [TarMember] {
    try AtomicFile.withWriter(to: path) { file in
        let tar = TarWriter(file)
        var members: [TarMember] = []
        for (name, bytes) in sampleMembers { members.append(try tar.add(name: name, bytes: bytes)) }
        try tar.finish()
        return members
    }
}

@Suite struct TarTests {
    @Test func roundTripGivesNamesOffsetsAndContent() throws {
        let path = try temporaryDirectory() + "/a.tar"
        let written = try writeSampleTar(to: path)
        #expect(written.map(\.name) == sampleMembers.map(\.0))
        let reader = try TarReader(path: path)
        #expect(reader.fileSize % TarWriter.recordSize == 0)
        let entries = try reader.entries()
        #expect(entries.map(\.name) == sampleMembers.map(\.0))
        for (entry, member) in zip(entries, written) {
            #expect(entry.headerOffset == member.headerOffset)
            #expect(entry.contentOffset == member.contentOffset)
            #expect(entry.size == member.size)
            #expect(entry.isRegularFile)
        }
        for (entry, (_, bytes)) in zip(entries, sampleMembers) {
            #expect(try reader.read(entry) == bytes)
            #expect(try reader.read(at: entry.contentOffset, count: entry.size) == bytes)
        }
        // Each member takes exactly its footprint, so shard boundaries can be planned before writing.
        for (i, member) in written.enumerated() {
            let next = i + 1 < written.count ? written[i + 1].headerOffset : member.contentEnd + TarHeader.padding(member.size)
            #expect(next - member.headerOffset == TarWriter.footprint(name: member.name, size: member.size), "\(member.name)")
        }
        #expect(TarWriter.footprint(name: "k", size: 1 << 33) == 3 * 512 + (1 << 33))
        // The long name takes a pax header block plus its records before the ustar header.
        let long = entries[5]
        #expect(long.contentOffset - long.headerOffset == 3 * 512)
        // In-memory reading gives the same entries.
        #expect(try TarReader(bytes: readFile(path)).entries() == entries)
        // Iterating from the middle of the file continues from that header.
        var iterator = reader.makeIterator(from: entries[3].headerOffset)
        #expect(try iterator.next()?.name == sampleMembers[3].0)
    }

    /// The header built on the stack from a template equals the one built field by field, for names of every
    /// length up to 100 bytes, sizes across the octal range and both member types.
    @Test func fastHeadersEqualTheFieldByFieldOnes() throws {
        var rng = SplitMix64(seed: 19)
        var names: [[UInt8]] = [[], Array("a".utf8), Array("././@PaxHeader".utf8), Array(repeating: 0xFF, count: 100)]
        for length in 1 ... 100 { names.append((0 ..< length).map { _ in UInt8(truncatingIfNeeded: rng.next() % 255 + 1) }) }
        var sizes = [0, 1, 511, 512, 513, 338_816, TarHeader.maxOctalSize - 1]
        for _ in 0 ..< 50 { sizes.append(Int(rng.next() % UInt64(TarHeader.maxOctalSize))) }
        for name in names {
            for size in sizes {
                for type in [UInt8(ascii: "0"), UInt8(ascii: "x")] {
                    let reference = TarHeader.referenceBlock(name: name, size: size, type: type)
                    #expect(TarHeader.block(name: name, size: size, type: type) == reference, "\(name.count) \(size)")
                }
            }
        }
    }

    @Test func sameMembersGiveByteIdenticalArchives() throws {
        let dir = try temporaryDirectory()
        _ = try writeSampleTar(to: dir + "/a.tar")
        _ = try writeSampleTar(to: dir + "/b.tar")
        #expect(try readFile(dir + "/a.tar") == readFile(dir + "/b.tar"))
    }

    @Test func streamedContentMustMatchDeclaredSize() throws {
        let path = try temporaryDirectory() + "/bad.tar"
        #expect(throws: VLMError.self) {
            try AtomicFile.withWriter(to: path) { file in
                let tar = TarWriter(file)
                try tar.add(name: "a.bin", size: 10) { file in try file.write([1, 2, 3]) }
            }
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test(.enabled(if: which("tar") != nil, "GNU tar not installed"))
    func gnuTarListsAndExtractsEveryMember() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/a.tar"
        _ = try writeSampleTar(to: path)
        let listing = try run(which("tar")!, ["-tvf", path])
        #expect(listing.status == 0, "\(listing.err)")
        #expect(listing.err.isEmpty, "tar warned: \(listing.err)")
        let names = try run(which("tar")!, ["-tf", path]).out.split(separator: "\n").map(String.init)
        #expect(names == sampleMembers.map(\.0))
        #expect(listing.out.contains("root/root"))
        #expect(listing.out.contains("2020-01-01"))
        let out = dir + "/x"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        #expect(try run(which("tar")!, ["-xf", path, "-C", out]).status == 0)
        for (name, bytes) in sampleMembers {
            #expect(try readFile(out + "/" + name) == bytes, "\(name)")
        }
    }

    @Test(.enabled(if: which("tar") != nil, "GNU tar not installed"))
    func readsArchivesWrittenByGnuTar() throws {
        let dir = try temporaryDirectory()
        let src = dir + "/src"
        try FileManager.default.createDirectory(atPath: src + "/dir", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: src + "/" + String(repeating: "p", count: 60),
                                                withIntermediateDirectories: true)
        for (name, bytes) in sampleMembers {
            try Data(bytes).write(to: URL(fileURLWithPath: src + "/" + name))
        }
        // GNU format (long names as 'L' records) and POSIX pax format.
        for format in ["gnu", "posix", "ustar"] {
            let names = format == "ustar" ? sampleMembers.map(\.0).filter { !$0.hasPrefix("dir/") }
                                          : sampleMembers.map(\.0)
            let tarPath = dir + "/\(format).tar"
            let made = try run(which("tar")!, ["--format=\(format)", "-cf", tarPath, "-C", src] + names)
            #expect(made.status == 0, "\(made.err)")
            let reader = try TarReader(path: tarPath)
            let files = try reader.entries().filter(\.isRegularFile)
            #expect(files.map(\.name) == names, "\(format)")
            for entry in files {
                let expected = sampleMembers.first { $0.0 == entry.name }!.1
                #expect(try reader.read(entry) == expected, "\(format): \(entry.name)")
            }
        }
    }

    @Test(.enabled(if: python != nil, "VLMDATA_PYTHON is not set"))
    func pythonTarfileReadsOurArchiveAtOurOffsets() throws {
        let path = try temporaryDirectory() + "/a.tar"
        let written = try writeSampleTar(to: path)
        let out = try runPython("""
        import sys, tarfile, json, hashlib
        with tarfile.open(sys.argv[1]) as t:
            print(json.dumps([[m.name, m.offset, m.offset_data, m.size, m.mtime, m.uid, m.uname, m.mode,
                               hashlib.sha256(t.extractfile(m).read()).hexdigest()] for m in t.getmembers()]))
        """, [path])
        let rows = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [[Any]]
        #expect(rows.count == sampleMembers.count)
        for (row, member) in zip(rows, written) {
            #expect(row[0] as? String == member.name)
            #expect(row[1] as? Int == member.headerOffset)
            #expect(row[2] as? Int == member.contentOffset)
            #expect(row[3] as? Int == member.size)
            #expect(row[4] as? Int == TarWriter.fixedMTime)
            #expect(row[5] as? Int == 0)
            #expect(row[6] as? String == "root")
            #expect(row[7] as? Int == 0o644)
        }
        for (row, (_, bytes)) in zip(rows, sampleMembers) {
            #expect(row[8] as? String == Hashing.sha256(bytes))
        }
    }

    @Test(.enabled(if: python != nil, "VLMDATA_PYTHON is not set"))
    func readsArchivesWrittenByPythonTarfile() throws {
        let dir = try temporaryDirectory()
        for format in ["PAX_FORMAT", "GNU_FORMAT"] {
            let path = dir + "/\(format).tar"
            _ = try runPython("""
            import sys, tarfile, io
            names = [("a.json", b"{}"), ("b/" + "n" * 150 + ".npy", bytes(range(256)) * 3), ("c.txt", b"")]
            with tarfile.open(sys.argv[1], "w", format=getattr(tarfile, sys.argv[2])) as t:
                for name, data in names:
                    info = tarfile.TarInfo(name); info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
            """, [path, format])
            let reader = try TarReader(path: path)
            let entries = try reader.entries()
            #expect(entries.map(\.name) == ["a.json", "b/" + String(repeating: "n", count: 150) + ".npy", "c.txt"])
            #expect(try reader.read(entries[1]) == Array((0 ..< 256).map { UInt8($0) }) + (0 ..< 512).map { UInt8($0 % 256) })
            #expect(try reader.read(entries[2]) == [])
        }
    }

    @Test func corruptHeadersAndTruncationAreReported() throws {
        let path = try temporaryDirectory() + "/a.tar"
        let written = try writeSampleTar(to: path)
        var bytes = try readFile(path)
        // A flipped byte in the second header's name breaks its checksum.
        var flipped = bytes
        flipped[written[1].headerOffset + 3] ^= 0x40
        #expect {
            _ = try TarReader(bytes: flipped).entries()
        } throws: { ($0 as? VLMError)?.kind == .corrupt && "\($0)".contains("checksum") }
        // Truncated inside the content of the last member.
        bytes.removeLast(bytes.count - written.last!.contentOffset - 1)
        #expect {
            _ = try TarReader(bytes: bytes).entries()
        } throws: { ($0 as? VLMError)?.kind == .corrupt }
        #expect(throws: VLMError.self) { try TarReader(bytes: bytes).read(at: bytes.count - 1, count: 2) }
        #expect { _ = try TarReader(path: path + ".missing") } throws: { ($0 as? VLMError)?.kind == .notFound }
    }
}
