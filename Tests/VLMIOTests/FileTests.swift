import Foundation
import Testing
import VLMCore
@testable import VLMIO

@Test func atomicWriteReplacesWholeOrNothing() throws {
    let path = try tempFile([1, 2, 3], name: "a.bin")
    try AtomicFile.write([9, 9], to: path)
    #expect(FileManager.default.contents(atPath: path) == Data([9, 9]))
    struct Boom: Error {}
    #expect(throws: Boom.self) {
        try AtomicFile.withWriter(to: path) { writer in
            try writer.write([7, 7, 7, 7])
            throw Boom()
        }
    }
    #expect(FileManager.default.contents(atPath: path) == Data([9, 9]))
    let dir = (path as NSString).deletingLastPathComponent
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["a.bin"], "no temporary file is left behind")
}

@Test func imageHeadersOfEncodedImages() throws {
    let pixels = [UInt8](repeating: 128, count: 40 * 30 * 3)
    let png = try ImageEncode.png(rgb: pixels, width: 40, height: 30)
    #expect(try ImageHeader.read(png, name: "a.png") == ImageHeader(format: .png, width: 40, height: 30))
    let jpeg = try ImageEncode.jpeg(rgb: pixels, width: 40, height: 30)
    #expect(try ImageHeader.read(jpeg, name: "a.jpg") == ImageHeader(format: .jpeg, width: 40, height: 30))
    #expect(throws: VLMError.self) { try ImageHeader.read(Array("hello world".utf8), name: "x.jpg") }
    #expect(throws: VLMError.self) { try ImageHeader.read([], name: "empty.jpg") }
    #expect(throws: VLMError.self) { try ImageHeader.read(Array(jpeg.prefix(20)), name: "cut.jpg") }
    #expect(throws: VLMError.self) { try ImageHeader.read(Array("GIF89a\u{1}\u{0}\u{1}\u{0}".utf8), name: "a.gif") }
}

@Test func unsafeMemberNames() {
    #expect(ArchiveReader.isSafeMemberName("train2017/000000000139.jpg"))
    for name in ["../evil.jpg", "/etc/passwd", "a/../../b.jpg", "..", "", "C:\\x.jpg", "a\\..\\b"] {
        #expect(!ArchiveReader.isSafeMemberName(name), "\(name)")
    }
}

@Test func sha256OfKnownInput() throws {
    #expect(Hashing.sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    let path = try tempFile(Array("abc".utf8), name: "abc.txt")
    #expect(try Hashing.sha256(file: path) == Hashing.sha256("abc"))
}
