#!/usr/bin/env python3
"""`make release VERSION=x.y.z`: the files a Terraform provider registry serves, in dist/.

For each target the Rust toolchain here can build: terraform-provider-castle_<v>_<os>_<arch>.zip
holding the stripped binary terraform-provider-castle_v<v>; then <name>_<v>_manifest.json
(a copy of terraform-registry-manifest.json: protocol 6.0), <name>_<v>_SHA256SUMS over the
zips and the manifest, and its detached GPG signature <name>_<v>_SHA256SUMS.sig made with the
caller's key (GPG_KEY_ID, GNUPGHOME).

The same commit gives the same checksums: paths are remapped out of the binary, and each zip
has one entry with a fixed timestamp and mode. Only the signature differs between runs (GPG
stamps the time of signing). Standard library only: it runs before any virtualenv exists.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = 'terraform-provider-castle'
PROTOCOL_VERSIONS = ['6.0']
# The Registry's platforms castle is meant for, by Rust target triple.
PLATFORMS = {
    'x86_64-unknown-linux-gnu': ('linux', 'amd64'),
    'aarch64-unknown-linux-gnu': ('linux', 'arm64'),
    'x86_64-apple-darwin': ('darwin', 'amd64'),
    'aarch64-apple-darwin': ('darwin', 'arm64'),
    'x86_64-pc-windows-gnu': ('windows', 'amd64'),
    'x86_64-unknown-freebsd': ('freebsd', 'amd64'),
}
# 1980-01-01, the earliest time a zip entry can hold.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def say(text):
    print('==> ' + text, flush=True)


def cargo_version():
    with open(os.path.join(ROOT, 'Cargo.toml'), 'rb') as f:
        return tomllib.load(f)['workspace']['package']['version']


def check_version(version):
    """The tag, Cargo's version (what the provider reports) and the changelog must agree."""
    if not re.fullmatch(r'\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?', version):
        raise SystemExit('VERSION=%r is not a semantic version like 1.2.3' % version)
    if cargo_version() != version:
        raise SystemExit('VERSION=%s but Cargo.toml says %s: set [workspace.package] version '
                         'to %s first (the provider reports that version)' % (version, cargo_version(), version))
    with open(os.path.join(ROOT, 'CHANGELOG.md')) as f:
        if not re.search(r'^## \[%s\]' % re.escape(version), f.read(), re.M):
            raise SystemExit('CHANGELOG.md has no "## [%s]" section: say what this release changes' % version)


def host_triple():
    out = subprocess.run(['rustc', '-vV'], capture_output=True, text=True, check=True).stdout
    return re.search(r'^host: (\S+)', out, re.M).group(1)


def installed_targets():
    proc = subprocess.run(['rustup', 'target', 'list', '--installed'], capture_output=True, text=True)
    if proc.returncode != 0:
        return [host_triple()]
    return proc.stdout.split()


def target_dir():
    return os.environ.get('CARGO_TARGET_DIR', os.path.join(ROOT, 'target'))


def remap_flags():
    """Absolute paths become fixed ones, so a checkout anywhere builds the same bytes: the
    checkout itself (the working directory rustc records in debug info, which also feeds the
    linker's build id), dependencies' sources under CARGO_HOME, and generated code under the
    target directory. (Two checkouts at different paths, built without these flags, gave
    binaries that differed only in that build id.)"""
    cargo_home = os.environ.get('CARGO_HOME', os.path.expanduser('~/.cargo'))
    pairs = [(ROOT, '/castle'), (cargo_home, '/cargo'), (os.path.abspath(target_dir()), '/target')]
    # rustc applies the last matching prefix: the more specific ones go last.
    return ' '.join('--remap-path-prefix=%s=%s' % pair for pair in pairs)


def build(triple, profile):
    """Builds and returns the stripped binary's path, or raises with cargo's last lines."""
    env = dict(os.environ)
    if profile == 'release':
        command = ['cargo', 'build', '--locked', '--release', '--target', triple]
        env['RUSTFLAGS'] = (env.get('RUSTFLAGS', '') + ' ' + remap_flags()).strip()
        env['CARGO_PROFILE_RELEASE_STRIP'] = 'symbols'
        built = os.path.join(target_dir(), triple, 'release', NAME)
    else:
        # Tests package the host's dev binary that `make build` made: no second build.
        if triple != host_triple():
            raise RuntimeError('the %s profile packages only the host target (%s)' % (profile, host_triple()))
        built = os.path.join(target_dir(), 'debug' if profile == 'dev' else profile, NAME)
        if not os.path.exists(built):
            raise RuntimeError('%s is missing: run `make build` first' % built)
        stripped = os.path.join(tempfile.mkdtemp(prefix='castle-release-'), NAME)
        subprocess.run(['strip', '-o', stripped, built], check=True)
        return stripped
    command += ['-p', NAME, '--bin', NAME]
    proc = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError('cargo failed:\n' + '\n'.join(proc.stderr.strip().splitlines()[-15:]))
    if triple.endswith('windows-gnu') or triple.endswith('windows-msvc'):
        built += '.exe'
    return built


def write_zip(path, entry_name, binary):
    """One entry, fixed time and mode: the bytes depend only on the binary."""
    info = zipfile.ZipInfo(entry_name, date_time=ZIP_EPOCH)
    info.create_system = 3  # Unix, so the mode below is honoured
    info.external_attr = (0o100755 & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(binary, 'rb') as f:
        data = f.read()
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr(info, data)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def sign(sums, key_id):
    command = ['gpg', '--batch', '--yes', '--detach-sign', '--output', sums + '.sig']
    if key_id:
        command += ['--local-user', key_id]
    proc = subprocess.run(command + [sums], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit('gpg could not sign %s (set GPG_KEY_ID to a secret key in GNUPGHOME):\n%s'
                         % (os.path.basename(sums), proc.stderr.strip()))


def registry_manifest():
    """terraform-registry-manifest.json at the repository root, checked: it tells the Registry
    which plugin protocol castle speaks."""
    path = os.path.join(ROOT, 'terraform-registry-manifest.json')
    with open(path) as f:
        text = f.read()
    if json.loads(text).get('metadata', {}).get('protocol_versions') != PROTOCOL_VERSIONS:
        raise SystemExit('%s must declare protocol_versions %s (tf-provider serves protocol 6)'
                         % (path, PROTOCOL_VERSIONS))
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--version', default=cargo_version())
    parser.add_argument('--out', default=os.path.join(ROOT, 'dist'))
    parser.add_argument('--profile', default='release',
                        help='release builds; dev packages the host binary `make build` made (tests)')
    parser.add_argument('--targets', help='comma-separated Rust triples (default: every installed one castle ships for)')
    parser.add_argument('--gpg-key', default=os.environ.get('GPG_KEY_ID'), help='key to sign with (GPG_KEY_ID)')
    parser.add_argument('--no-sign', action='store_true', help='skip the signature (never for a real release)')
    args = parser.parse_args()

    check_version(args.version)
    manifest_text = registry_manifest()
    version = args.version
    if args.targets:
        wanted = args.targets.split(',')
    elif args.profile != 'release':
        wanted = [host_triple()]
    else:
        wanted = list(PLATFORMS)
    installed = set(installed_targets())
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)

    built, skipped = [], []
    for triple in wanted:
        if triple not in PLATFORMS:
            raise SystemExit('%s is not a platform castle ships for: one of %s' % (triple, ', '.join(PLATFORMS)))
        goos, goarch = PLATFORMS[triple]
        if triple not in installed:
            skipped.append((triple, 'its Rust standard library is not installed (rustup target add %s)' % triple))
            continue
        say('building %s_%s (%s, %s profile)' % (goos, goarch, triple, args.profile))
        try:
            binary = build(triple, args.profile)
        except RuntimeError as e:
            skipped.append((triple, str(e)))
            continue
        exe = '.exe' if goos == 'windows' else ''
        archive = os.path.join(args.out, '%s_%s_%s_%s.zip' % (NAME, version, goos, goarch))
        write_zip(archive, '%s_v%s%s' % (NAME, version, exe), binary)
        built.append(archive)

    for triple, why in skipped:
        say('not built: %s_%s (%s): %s' % (PLATFORMS[triple] + (triple, why)))
    if not any(a.endswith('_linux_amd64.zip') for a in built):
        raise SystemExit('linux_amd64 could not be built; no release')

    manifest = os.path.join(args.out, '%s_%s_manifest.json' % (NAME, version))
    with open(manifest, 'w') as f:
        f.write(manifest_text)
    sums = os.path.join(args.out, '%s_%s_SHA256SUMS' % (NAME, version))
    with open(sums, 'w') as f:
        for path in sorted(built + [manifest], key=os.path.basename):
            f.write('%s  %s\n' % (sha256(path), os.path.basename(path)))
    if not args.no_sign:
        sign(sums, args.gpg_key)
    say('release %s in %s:' % (version, os.path.relpath(args.out, os.getcwd())))
    for name in sorted(os.listdir(args.out)):
        print('    ' + name)
    print(open(sums).read(), end='')


if __name__ == '__main__':
    sys.exit(main())
