"""castle installed the way users install providers: `terraform init` from a registry speaking
the Provider Registry Protocol over HTTPS, checking the checksums and the GPG signature, and from
a filesystem or network mirror.

One release is packaged per test run, from the binary `make build` made (stripped, as
`make release` does), and signed with a throwaway key. A small HTTPS server on 127.0.0.1, with a
certificate from a throwaway CA that Terraform trusts through SSL_CERT_FILE, serves it as the
registry `localhost:<port>` (Terraform accepts a port in a registry hostname; `localhost`
resolves to loopback without DNS) and as a network mirror.
"""

import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import zipfile

import pytest

from harness.terraform import ROOT

pytestmark = pytest.mark.acceptance

NAMESPACE, TYPE = 'castle-lab', 'castle'
PLATFORM = ('linux', 'amd64')


def cargo_version():
    import tomllib
    with open(os.path.join(ROOT, 'Cargo.toml'), 'rb') as f:
        return tomllib.load(f)['workspace']['package']['version']


VERSION = cargo_version()
PREFIX = 'terraform-provider-castle_%s' % VERSION
ZIP = '%s_%s_%s.zip' % ((PREFIX,) + PLATFORM)


# --- a throwaway GPG key and CA -------------------------------------------------------------

class Gpg(object):
    """A keyring in a short temporary directory (gpg-agent's socket path must stay short)."""

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix='castle-gpg-', dir='/tmp')
        self.env = dict(os.environ, GNUPGHOME=self.home)

    def run(self, *args, input=None):
        return subprocess.run(['gpg', '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', *args],
                              env=self.env, input=input, capture_output=True, check=True).stdout

    def new_key(self, name):
        self.run('--quick-gen-key', '%s <%s@castle.invalid>' % (name, name.replace(' ', '-')), 'rsa2048', 'sign', '1d')
        listing = self.run('--list-keys', '--with-colons', '%s@castle.invalid' % name.replace(' ', '-')).decode()
        return re.search(r'^fpr:+([0-9A-F]{40}):', listing, re.M).group(1)

    def armored(self, fingerprint):
        return self.run('--armor', '--export', fingerprint).decode()

    def sign(self, fingerprint, data):
        return self.run('--local-user', fingerprint, '--detach-sign', '--output', '-', input=data)

    def close(self):
        subprocess.run(['gpgconf', '--kill', 'gpg-agent'], env=self.env, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def throwaway_ca(directory):
    """A CA and a certificate for localhost / 127.0.0.1 signed by it; returns (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, ca, sans=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'castle test registry CA')])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')]), ca_name,
                       key.public_key(), ca_key, False,
                       [x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))])
    paths = [os.path.join(directory, n) for n in ('ca.pem', 'cert.pem', 'key.pem')]
    for path, data in zip(paths, [ca.public_bytes(serialization.Encoding.PEM),
                                  cert.public_bytes(serialization.Encoding.PEM),
                                  key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption())]):
        with open(path, 'wb') as f:
            f.write(data)
    return paths


# --- the registry and network mirror ----------------------------------------------------------

class Registry(object):
    """Provider Registry Protocol (service discovery, versions, download) and the Provider
    Network Mirror Protocol, over HTTPS on 127.0.0.1. `files` and `signing_key` can be swapped
    by a test to serve a tampered release."""

    def __init__(self, dist, signing_key, cert, key):
        self.files = {name: open(os.path.join(dist, name), 'rb').read() for name in os.listdir(dist)}
        self.signing_key = signing_key
        self.requests = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                registry.requests.append(self.path)
                status, body, kind = registry.answer(self.path)
                self.send_response(status)
                self.send_header('Content-Type', kind)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = 'localhost:%d' % self.server.server_address[1]
        self.url = 'https://' + self.host
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path):
        base = '/v1/providers/%s/%s/' % (NAMESPACE, TYPE)
        mirror = '/mirror/registry.terraform.io/%s/%s/' % (NAMESPACE, TYPE)
        as_json = lambda value: (200, json.dumps(value).encode(), 'application/json')  # noqa: E731
        if path == '/.well-known/terraform.json':
            return as_json({'providers.v1': '/v1/providers/'})
        if path == base + 'versions':
            return as_json({'versions': [{'version': VERSION, 'protocols': ['6.0'],
                                          'platforms': [{'os': PLATFORM[0], 'arch': PLATFORM[1]}]}]})
        if path == base + '%s/download/%s/%s' % ((VERSION,) + PLATFORM):
            return as_json({
                'protocols': ['6.0'], 'os': PLATFORM[0], 'arch': PLATFORM[1], 'filename': ZIP,
                'download_url': self.url + '/files/' + ZIP,
                'shasums_url': self.url + '/files/%s_SHA256SUMS' % PREFIX,
                'shasums_signature_url': self.url + '/files/%s_SHA256SUMS.sig' % PREFIX,
                'shasum': hashlib.sha256(self.files[ZIP]).hexdigest(),
                'signing_keys': {'gpg_public_keys': [{'key_id': self.signing_key[0][-16:],
                                                      'ascii_armor': self.signing_key[1]}]},
            })
        if path == mirror + 'index.json':
            return as_json({'versions': {VERSION: {}}})
        if path == mirror + VERSION + '.json':
            return as_json({'archives': {'%s_%s' % PLATFORM: {
                'url': '/files/' + ZIP,
                'hashes': ['zh:' + hashlib.sha256(self.files[ZIP]).hexdigest()]}}})
        if path.startswith('/files/') and path[len('/files/'):] in self.files:
            return 200, self.files[path[len('/files/'):]], 'application/octet-stream'
        return 404, b'{"errors":["not found"]}', 'application/json'

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    """dist/ of a release signed with a throwaway key, a second key that did not sign it, and
    the test CA's files."""
    gpg = Gpg()
    try:
        key = gpg.new_key('castle release test')
        other = gpg.new_key('castle someone else')
        dist = str(tmp_path_factory.mktemp('dist'))
        subprocess.run([sys.executable, os.path.join(ROOT, 'acceptance-tests', 'release.py'), '--profile', 'dev',
                        '--out', dist, '--gpg-key', key], env=gpg.env, check=True, capture_output=True)
        ca, cert, cert_key = throwaway_ca(str(tmp_path_factory.mktemp('ca')))
        yield {'dist': dist, 'gpg': gpg, 'key': (key, gpg.armored(key)), 'other': (other, gpg.armored(other)),
               'ca': ca, 'cert': cert, 'cert_key': cert_key}
    finally:
        gpg.close()


@pytest.fixture
def registry(release):
    served = Registry(release['dist'], release['key'], release['cert'], release['cert_key'])
    try:
        yield served
    finally:
        served.stop()


def installer(tf, release, name, installation, source):
    """A Terraform working directory whose CLI configuration installs castle as given (no
    dev_overrides), with a configuration requiring `source`."""
    workdir = tf(name)
    rc = os.path.join(workdir.workdir, 'installation.tfrc')
    with open(rc, 'w') as f:
        f.write('provider_installation {\n%s\n}\n' % installation)
    workdir.env.update({'TF_CLI_CONFIG_FILE': rc, 'SSL_CERT_FILE': release['ca']})
    workdir.write('terraform {\n  required_providers {\n    castle = {\n      source  = "%s"\n'
                  '      version = "%s"\n    }\n  }\n}\n' % (source, VERSION), name='versions.tf')
    return workdir


def lock_file(t):
    with open(os.path.join(t.workdir, '.terraform.lock.hcl')) as f:
        return f.read()


# --- the tests ---------------------------------------------------------------------------------

def test_terraform_init_installs_the_signed_release_from_a_registry_and_plans_the_lab_example(
        tf, release, registry, pve, tmp_path):
    t = installer(tf, release, 'registry', '  direct {}', '%s/%s/%s' % (registry.host, NAMESPACE, TYPE))
    example = os.path.join(ROOT, 'examples', 'proxmox-vms')
    for name in os.listdir(example):
        if name.endswith('.tf') or name.endswith('.tfvars'):
            with open(os.path.join(example, name)) as f:
                text = f.read().replace('source = "castle-lab/castle"', 'source = "%s/%s/%s"'
                                        % (registry.host, NAMESPACE, TYPE))
            t.write(text, name=name)
    os.remove(os.path.join(t.workdir, 'versions.tf'))

    out = t.run('init', '-no-color')
    assert 'Installed %s/%s/%s v%s' % (registry.host, NAMESPACE, TYPE, VERSION) in out, out
    assert 'Signed by a HashiCorp partner' not in out
    assert 'key ID %s' % release['key'][0][-16:] in out, out
    lock = lock_file(t)
    assert 'provider "%s/%s/%s"' % (registry.host, NAMESPACE, TYPE) in lock
    assert re.search(r'version\s*=\s*"%s"' % re.escape(VERSION), lock), lock
    assert 'zh:' + hashlib.sha256(registry.files[ZIP]).hexdigest() in lock
    assert any(p.endswith('_SHA256SUMS.sig') for p in registry.requests)

    ca_file = tmp_path / 'pve-ca.pem'
    ca_file.write_text(pve.ca_pem)
    t.env.update({'TF_LOG_PROVIDER': 'info', 'TF_LOG_PATH': str(tmp_path / 'terraform.log')})
    out = t.plan('-var-file=lab.tfvars', '-var=proxmox_endpoint=' + pve.url,
                 '-var=proxmox_ca_cert_file=' + str(ca_file))
    assert 'Plan: 5 to add, 0 to change, 0 to destroy.' in out, out
    log = (tmp_path / 'terraform.log').read_text()
    configured = [line for line in log.splitlines() if 'castle configured' in line]
    assert configured and 'version=%s' % VERSION in configured[0], 'castle does not log its version:\n' + log


def test_a_tampered_archive_is_refused(tf, release, registry):
    tampered = bytearray(registry.files[ZIP])
    tampered[len(tampered) // 2] ^= 0xFF
    registry.files[ZIP] = bytes(tampered)
    t = installer(tf, release, 'tampered', '  direct {}', '%s/%s/%s' % (registry.host, NAMESPACE, TYPE))
    out = t.run('init', '-no-color', expect_fail=True)
    assert 'checksum' in out.lower(), out
    assert not os.path.exists(os.path.join(t.workdir, '.terraform.lock.hcl'))


def test_checksums_signed_by_another_key_are_refused(tf, release, registry):
    registry.files[PREFIX + '_SHA256SUMS.sig'] = release['gpg'].sign(release['other'][0],
                                                                       registry.files[PREFIX + '_SHA256SUMS'])
    t = installer(tf, release, 'bad-signature', '  direct {}', '%s/%s/%s' % (registry.host, NAMESPACE, TYPE))
    out = t.run('init', '-no-color', expect_fail=True)
    assert 'signature' in out.lower(), out
    assert not os.path.exists(os.path.join(t.workdir, '.terraform.lock.hcl'))


def test_terraform_init_installs_from_a_filesystem_mirror(tf, release, tmp_path):
    mirror = tmp_path / 'mirror' / 'registry.terraform.io' / NAMESPACE / TYPE
    mirror.mkdir(parents=True)
    shutil.copy(os.path.join(release['dist'], ZIP), mirror / ZIP)
    t = installer(tf, release, 'fs-mirror', '  filesystem_mirror {\n    path = "%s"\n  }' % (tmp_path / 'mirror'),
                  '%s/%s' % (NAMESPACE, TYPE))
    out = t.run('init', '-no-color')
    assert 'Installed %s/%s v%s (unauthenticated)' % (NAMESPACE, TYPE, VERSION) in out, out
    assert 'provider "registry.terraform.io/%s/%s"' % (NAMESPACE, TYPE) in lock_file(t)
    with zipfile.ZipFile(os.path.join(release['dist'], ZIP)) as z:
        assert z.namelist() == ['terraform-provider-castle_v' + VERSION]
    t.write('provider "castle" {}\n', name='main.tf')
    assert 'Success! The configuration is valid' in t.run('validate', '-no-color')


def test_terraform_init_installs_from_a_network_mirror(tf, release, registry):
    t = installer(tf, release, 'net-mirror', '  network_mirror {\n    url = "%s/mirror/"\n  }' % registry.url,
                  '%s/%s' % (NAMESPACE, TYPE))
    out = t.run('init', '-no-color')
    assert 'Installed %s/%s v%s' % (NAMESPACE, TYPE, VERSION) in out, out
    # Terraform checked the archive against the mirror's zh: hash, and records the h1: hash of
    # what it unpacked.
    assert re.search(r'"h1:[A-Za-z0-9+/=]+"', lock_file(t))
    assert any(p.endswith('/files/' + ZIP) for p in registry.requests)
    t.write('provider "castle" {}\n', name='main.tf')
    assert 'Success! The configuration is valid' in t.run('validate', '-no-color')
