import Foundation
import Testing
import VLMCore
@testable import VLMIO

private func date(_ text: String) -> Date {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
    return formatter.date(from: text)!
}

/// AWS's SigV4 test suite, case `get-vanilla` (also what botocore's SigV4Auth gives for it).
@Test func sigV4GetVanillaMatchesAWSSuite() {
    let signer = SigV4Signer(credentials: S3Credentials(accessKey: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                             region: "us-east-1", service: "service")
    let signed = signer.sign(method: "GET", url: URLComponents(string: "https://example.amazonaws.com/")!, headers: [],
                             payloadSHA256: SigV4Signer.emptySHA256, date: date("20150830T123600Z"))
    #expect(signed.canonicalRequest == """
        GET
        /

        host:example.amazonaws.com
        x-amz-date:20150830T123600Z

        host;x-amz-date
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
        """)
    #expect(signed.stringToSign == """
        AWS4-HMAC-SHA256
        20150830T123600Z
        20150830/us-east-1/service/aws4_request
        bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63
        """)
    #expect(signed.authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        + "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
}

/// The S3 documentation's "GET object" example (examplebucket/test.txt, Range bytes=0-9).
@Test func sigV4S3GetObjectMatchesAWSDocs() {
    let signer = SigV4Signer(credentials: S3Credentials(accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                             region: "us-east-1", service: "s3")
    let signed = signer.sign(method: "GET", url: URLComponents(string: "https://examplebucket.s3.amazonaws.com/test.txt")!,
                             headers: [("Range", "bytes=0-9")], payloadSHA256: SigV4Signer.emptySHA256,
                             date: date("20130524T000000Z"))
    #expect(signed.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    #expect(signed.authorization.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"))
    #expect(signed.headers.contains { $0.name == "X-Amz-Content-Sha256" && $0.value == SigV4Signer.emptySHA256 })
}

/// A path-style PUT of a multipart part with an encoded key, query and session token, against botocore 1.x's
/// S3SigV4Auth for the same request (printed by botocore with its clock fixed at 2026-12-06 22:30:05 UTC).
@Test func sigV4PathStyleUploadPartMatchesBotocore() {
    let signer = SigV4Signer(credentials: S3Credentials(accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                                        sessionToken: "tok/en+="),
                             region: "eu-west-1", service: "s3")
    let body = Array("hello".utf8)
    let url = URLComponents(string: "http://127.0.0.1:9000/bucket/ds/shards/train%20x-000000.tar?partNumber=2&uploadId=a%2Fb%3D")!
    let signed = signer.sign(method: "PUT", url: url, headers: [("Content-Type", "application/octet-stream")],
                             payloadSHA256: body.withUnsafeBytes(SigV4Signer.payloadHash), date: date("20261206T223005Z"))
    #expect(signed.authorization == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261206/eu-west-1/s3/aws4_request, "
        + "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
        + "Signature=46143adc7e44fff6534d808530a6821a4b16fc5ebc1611292fa50f637ef9e827")
    #expect(signed.canonicalRequest.contains("\n/bucket/ds/shards/train%20x-000000.tar\npartNumber=2&uploadId=a%2Fb%3D\n"))
    #expect(signed.canonicalRequest.contains("host:127.0.0.1:9000\n"))
}

/// The signing date is the request's: a skewed clock shows in X-Amz-Date and the credential scope (what S3 checks
/// to answer RequestTimeTooSkewed; the test server does not check the clock, so this is tested here).
@Test func sigV4SigningDateIsTheClockGiven() throws {
    let signer = SigV4Signer(credentials: S3Credentials(accessKey: "AK", secretKey: "SECRETSECRET"), region: "us-east-1", service: "s3")
    let url = URLComponents(string: "http://127.0.0.1:1/b/k")!
    let now = date("20261206T235959Z")
    let a = signer.sign(method: "GET", url: url, headers: [], payloadSHA256: SigV4Signer.emptySHA256, date: now)
    let b = signer.sign(method: "GET", url: url, headers: [], payloadSHA256: SigV4Signer.emptySHA256, date: now.addingTimeInterval(3600))
    #expect(a.headers.contains { $0.name == "X-Amz-Date" && $0.value == "20261206T235959Z" })
    #expect(b.headers.contains { $0.name == "X-Amz-Date" && $0.value == "20261207T005959Z" })
    #expect(b.authorization.contains("Credential=AK/20261207/us-east-1/s3/aws4_request"))
    #expect(a.signature != b.signature)

    var config = S3Config(credentials: signer.credentials, endpoint: "http://127.0.0.1:1")
    config.attempts = 1
    let client = try S3Client(config: config)
    client.clockOffset = -1200
    let request = try client.signed(HTTPRequest(url: client.httpURL(S3Location(bucket: "b", key: "k"))))
    let sent = try #require(request.headers.first { $0.name == "X-Amz-Date" }?.value)
    #expect(sent == SigV4Signer.amzDate(Date().addingTimeInterval(-1200)) || sent == SigV4Signer.amzDate(Date().addingTimeInterval(-1201)))
}

@Test func s3ErrorsNameTheURLAndNeverTheSecret() throws {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    let client = try S3Client(config: S3Config(credentials: S3Credentials(accessKey: "AKID", secretKey: secret), endpoint: "http://127.0.0.1:1"))
    let body = Array("""
        <?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match (key \(secret))</Message></Error>
        """.utf8)
    let auth = client.failure(403, body: body, location: S3Location(bucket: "b", key: "k/x.tar"), operation: "GET")
    #expect(auth.message.contains("SignatureDoesNotMatch"))
    #expect(auth.file == "s3://b/k/x.tar")
    #expect(!"\(auth)".contains(secret))
    let missing = client.failure(404, body: Array("<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>".utf8),
                                 location: S3Location(bucket: "nob", key: "x"), operation: "GET")
    #expect(missing.kind == .notFound)
    #expect(missing.message.contains("no such bucket"))
    #expect(S3Client.isRetryable(status: 503, code: "SlowDown"))
    #expect(!S3Client.isRetryable(status: 403, code: "AccessDenied"))
}

@Test func s3CredentialsFromEnvironmentOrProfile() throws {
    let env = try S3Credentials.resolve(environment: ["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": "T"])
    #expect(env.accessKey == "A" && env.secretKey == "S" && env.sessionToken == "T")
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlmdata-cred-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let file = dir + "/credentials"
    try """
    [default]
    aws_access_key_id = D1
    aws_secret_access_key = D2
    # a comment
    [profile train]
    aws_access_key_id=P1
    aws_secret_access_key=P2
    aws_session_token=P3
    """.write(toFile: file, atomically: true, encoding: .utf8)
    let def = try S3Credentials.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": file])
    #expect(def.accessKey == "D1" && def.secretKey == "D2" && def.sessionToken == nil)
    let train = try S3Credentials.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": file, "AWS_PROFILE": "train"])
    #expect(train.accessKey == "P1" && train.sessionToken == "P3")
    #expect(throws: VLMError.self) { _ = try S3Credentials.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": file, "AWS_PROFILE": "nope"]) }
    #expect(try S3Location("s3://bkt/a/b.tar") == S3Location(bucket: "bkt", key: "a/b.tar"))
    #expect(try S3Location("s3://bkt").appending("index.sqlite").description == "s3://bkt/index.sqlite")
    #expect(throws: VLMError.self) { _ = try S3Location("s3:///x") }
}
