import Crypto
import Foundation
import TestSupport
import SwiftASN1
import X509

/// Certificates made at test time (never committed): a CA, and leaf certificates it signs for
/// 127.0.0.1 and localhost, written as PEM files in a temporary directory removed at the end.
final class TestPKI: @unchecked Sendable {
    let directory: URL
    let name: String
    private let caKey = P256.Signing.PrivateKey()
    private let caName: DistinguishedName
    let caCertificate: Certificate
    /// The CA certificate's PEM file.
    let caPath: String

    init(_ name: String) throws {
        self.name = name
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("smg-pki-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        caName = try DistinguishedName { CommonName("smg test CA \(name)") }
        let key = Certificate.PrivateKey(caKey)
        caCertificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: Date().addingTimeInterval(-3600), notValidAfter: Date().addingTimeInterval(86400),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: key)
        caPath = directory.appendingPathComponent("ca.pem").path
        try write(caCertificate.serializeAsPEM().pemString, to: caPath)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    struct Issued {
        let certificatePath: String
        let keyPath: String
        let serial: String
    }

    /// A leaf for 127.0.0.1 and localhost (server and client use), its PEM files named `file`.
    func issue(_ file: String, commonName: String = "127.0.0.1") throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let serial = Certificate.SerialNumber()
        let certificate = try Certificate(
            version: .v3, serialNumber: serial, publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-3600), notValidAfter: Date().addingTimeInterval(86400),
            issuer: caName, subject: try DistinguishedName { CommonName(commonName) }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames([.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))
        let certPath = directory.appendingPathComponent("\(file).pem").path
        let keyPath = directory.appendingPathComponent("\(file)-key.pem").path
        // The leaf, then the CA: a full chain, as servers are meant to send it.
        try write(certificate.serializeAsPEM().pemString + "\n" + caCertificate.serializeAsPEM().pemString, to: certPath)
        try write(key.pemRepresentation, to: keyPath)
        return Issued(certificatePath: certPath, keyPath: keyPath, serial: "\(serial)")
    }

    private func write(_ text: String, to path: String) throws {
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
    }
}
